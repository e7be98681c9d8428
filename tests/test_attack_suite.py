"""The attack suite: budget accounting, end-to-end matches, determinism, label-mode refusal.

Every attack runs with tiny parameters (through its Params) so the whole file stays fast.
"""

import pytest
import torch

from engines.artifacts import ArtifactStore
from engines.attackers import ATTACKERS, AttackContext
from engines.data.base import ImageSet
from engines.errors import ArenaError
from engines.match import MatchEnvironment, MatchObserver, load_victim, play_match
from engines.oracle import Oracle
from engines.spec import MatchSpec, checkpoint_schedule

TINY_VICTIM = {"arch": None, "train": {"epochs": 2, "batch_size": 128, "lr": 0.05}}
KO = {"epochs": 1, "min_steps": 4}
MAZE = {"batch_size": 8, "ndirs": 2, "generator_width": 4, "nz": 8, "iter_exp": 2}
DFMS = {"proxy_size": 64, "gan_steps": 3, "gan_width": 4, "batch_size": 8, "warmup_epochs": 1, "nz": 8}
ACTIVE = {"iterations": 3, "epochs": 2, "min_steps": 4, "patience": 2}
JBDA = {"num_seeds": 10, "epochs_per_round": 1, "min_steps_per_round": 2}

# name -> (tiny params, label mode, tiny budget)
SUITE = {
    "knockoff-adaptive": (KO, "soft", 50),
    "jbda": (JBDA, "hard", 75),
    "activethief-kcenter": (ACTIVE, "soft", 60),
    "activethief-uncertainty": (ACTIVE, "topk", 60),
    "maze": (MAZE, "soft", 8 * (3 + 4) * 2 + 5),  # two iterations and 5 left over
    "dfms-hl": (DFMS, "hard", 61),
    "dfms-sl": ({**DFMS, "proxy": "pool"}, "soft", 61),
    "argmax-clone": (KO, "soft", 40),
    "logp-clone": (KO, "soft", 40),
    "augmented-queries": (KO, "hard", 50),
}


class SpyDefender:
    """Wraps the victim and records every batch the API serves (independently of the oracle)."""

    def __init__(self, victim):
        self.victim = victim
        self.batches: list[torch.Tensor] = []

    def __call__(self, x):
        self.batches.append(x.detach().clone())
        return torch.softmax(self.victim(x), dim=1)

    @property
    def served(self) -> int:
        return sum(len(b) for b in self.batches)


def _victim(cache_dir, splits, victim_spec):
    spec = MatchSpec(device="cpu", victim=victim_spec).resolve()
    victim, _, _ = load_victim(spec, splits, ArtifactStore(cache_dir), torch.device("cpu"), MatchObserver())
    return victim


@pytest.fixture(scope="session")
def tiny_victim(cache_dir, mnist5k):
    """The spine tests' 2-epoch victim (shared through the artifact cache): enough for accounting."""
    return _victim(cache_dir, mnist5k, TINY_VICTIM)


@pytest.fixture(scope="session")
def decent_victim(cache_dir, mnist5k):
    """A 3-epoch victim (~90 % test accuracy) for tests whose outcome depends on sensible answers."""
    return _victim(cache_dir, mnist5k, {"arch": None, "train": {"epochs": 3, "batch_size": 64, "lr": 0.05}})


def run_direct(name, params, mode, budget, splits, victim, seed=0, pool=None, checkpoints=None, artifacts=None):
    """Drive an attacker without a match: spy defender, own oracle, recorded evaluations."""
    cls = ATTACKERS.get(name)
    attacker = cls(cls.Params.model_validate(params))
    pool = pool if pool is not None else splits.attacker_pool
    attacker.validate(mode, budget, len(pool))
    spy = SpyDefender(victim)
    oracle = Oracle(spy, budget, mode, splits.num_classes, splits.image_shape, torch.device("cpu"))
    test_x = splits.test.floats(slice(0, 200))
    evaluations = []

    def evaluate(clone, used):
        with torch.no_grad():
            evaluations.append((used, clone(test_x).argmax(1).tolist()))
        return {}

    ctx = AttackContext(
        family="mnist",
        num_classes=splits.num_classes,
        image_shape=splits.image_shape,
        mean=splits.mean,
        std=splits.std,
        pool=pool,
        device=torch.device("cpu"),
        seed=seed,
        checkpoints=checkpoints or checkpoint_schedule(budget, 12),
        evaluate=evaluate,
        artifacts=artifacts,
    )
    torch.manual_seed(seed)
    clone = attacker.run(oracle, ctx)
    return attacker, oracle, spy, evaluations, clone


@pytest.mark.parametrize("name", sorted(SUITE))
def test_spends_exactly_its_budget_and_is_deterministic(name, mnist5k, tiny_victim):
    params, mode, budget = SUITE[name]
    _, oracle, spy, evals, clone = run_direct(name, params, mode, budget, mnist5k, tiny_victim, seed=3)
    # every image the API served was counted, and the attack stopped exactly at its budget
    assert spy.served == oracle.queries_used == budget
    assert clone is not None and evals, "the attack must report its clone at least once"
    used = [u for u, _ in evals]
    assert used == sorted(used) and used[-1] <= budget
    # same seed, same config: the same queries and the same clone predictions
    _, _, spy2, evals2, _ = run_direct(name, params, mode, budget, mnist5k, tiny_victim, seed=3)
    assert len(spy.batches) == len(spy2.batches)
    assert all(torch.equal(a, b) for a, b in zip(spy.batches, spy2.batches))
    assert evals == evals2


def test_different_seeds_ask_different_queries(mnist5k, tiny_victim):
    _, _, spy_a, _, _ = run_direct("augmented-queries", KO, "soft", 20, mnist5k, tiny_victim, seed=1)
    _, _, spy_b, _, _ = run_direct("augmented-queries", KO, "soft", 20, mnist5k, tiny_victim, seed=2)
    assert not torch.equal(torch.cat(spy_a.batches), torch.cat(spy_b.batches))


def test_maze_counts_probes_and_generator_samples(mnist5k, tiny_victim):
    params, mode, budget = SUITE["maze"]
    _, _, spy, _, _ = run_direct("maze", params, mode, budget, mnist5k, tiny_victim)
    sizes = [len(b) for b in spy.batches]
    batch, ndirs = params["batch_size"], params["ndirs"]
    # one iteration: the generator batch and its ndirs probe copies, then 4 fresh clone batches
    assert sizes[:5] == [batch * (1 + ndirs), batch, batch, batch, batch]
    assert sizes[5:10] == sizes[:5]
    assert sum(sizes[10:]) == 5  # the leftover is spent on clone steps, never over budget


def test_maze_probes_are_small_perturbations_of_the_generator_batch(mnist5k, tiny_victim):
    params, mode, budget = SUITE["maze"]
    _, _, spy, _, _ = run_direct("maze", params, mode, budget, mnist5k, tiny_victim)
    first = spy.batches[0].view(1 + params["ndirs"], params["batch_size"], -1)
    gap = (first[1:] - first[:1]).abs().amax()
    assert 0 < gap < 1e-2  # mu = 1e-3 on the pre-tanh output


def test_jbda_grows_the_seed_set_with_jacobian_sign_steps(mnist5k, tiny_victim):
    params, mode, budget = SUITE["jbda"]
    _, _, spy, _, _ = run_direct("jbda", params, mode, budget, mnist5k, tiny_victim)
    served = torch.cat(spy.batches)
    seeds, first_round = served[:10], served[10:20]
    pool = mnist5k.attacker_pool.floats()
    # the seeds are pool images; the new points differ from them by exactly lambda where not clipped
    assert all((pool - s).abs().flatten(1).amax(1).min() == 0 for s in seeds)
    step = (first_round - seeds).abs()
    unclipped = (first_round > 0) & (first_round < 1)
    assert torch.allclose(step[unclipped], torch.full_like(step[unclipped], 0.1), atol=1e-6)
    assert len(served) == budget  # 10 + 10 + 20 + 35 (the last round cut to the budget)


def test_activethief_kcenter_and_uncertainty_choose_differently(mnist5k, tiny_victim):
    params, mode, budget = ACTIVE, "soft", 80
    _, _, spy_k, _, _ = run_direct("activethief-kcenter", params, mode, budget, mnist5k, tiny_victim)
    _, _, spy_u, _, _ = run_direct("activethief-uncertainty", params, mode, budget, mnist5k, tiny_victim)
    k, u = torch.cat(spy_k.batches), torch.cat(spy_u.batches)
    assert torch.equal(k[:24], u[:24])  # the same random validation and seed sets
    assert not torch.equal(k[24:], u[24:])  # then different selections
    assert len(torch.unique(k.flatten(1), dim=0)) == budget  # no image is bought twice


def test_knockoff_adaptive_learns_to_avoid_uninformative_clusters(mnist5k, decent_victim):
    """Against random sampling's ~50 %, the bandit should spend far fewer queries on junk."""
    g = torch.Generator().manual_seed(5)
    junk = torch.cat(
        [
            (torch.rand(150, 1, 32, 32, generator=g) * 255).to(torch.uint8),
            torch.zeros(150, 1, 32, 32, dtype=torch.uint8),
        ]
    )
    real = mnist5k.attacker_pool.images[:300]
    pool = ImageSet(torch.cat([real, junk]), torch.zeros(600, dtype=torch.long))
    attacker, oracle, _, _, _ = run_direct(
        "knockoff-adaptive", KO, "soft", 240, mnist5k, decent_victim, pool=pool, checkpoints=[240]
    )
    chosen = torch.tensor(attacker.chosen_indices)
    assert len(chosen) == 240 and len(torch.unique(chosen)) == 240
    junk_share = (chosen >= 300).float().mean().item()
    assert junk_share < 0.35, f"adaptive sampling spent {junk_share:.0%} of its queries on junk"
    # random sampling without replacement over the same pool is ~50 % junk
    random_share = (torch.randperm(600, generator=torch.Generator().manual_seed(0))[:240] >= 300).float().mean()
    assert abs(random_share.item() - 0.5) < 0.1


def test_augmented_queries_are_augmentations_not_pool_copies(mnist5k, tiny_victim):
    _, _, spy, _, _ = run_direct("augmented-queries", KO, "soft", 30, mnist5k, tiny_victim)
    served = torch.cat(spy.batches).flatten(1)
    pool = mnist5k.attacker_pool.floats().flatten(1)
    nearest = torch.cdist(served, pool, compute_mode="donot_use_mm_for_euclid_dist").min(1).values
    exact = (nearest == 0).float().mean().item()  # exact distances: a copy is at 0
    assert exact < 0.2


@pytest.mark.parametrize("name", sorted(SUITE))
def test_end_to_end_match(name, tmp_path, cache_dir):
    params, mode, budget = SUITE[name]
    spec = MatchSpec(
        device="cpu",
        victim=TINY_VICTIM,
        attacker=name,
        label_mode=mode,
        query_budget=budget,
        attacker_params=params,
        checkpoints=4,
    ).resolve()

    class Rows(MatchObserver):
        rows: list = []

        def checkpoint(self, row):
            self.rows.append(row)

    observer = Rows()
    observer.rows = []
    summary = play_match(spec, observer, MatchEnvironment(cache_root=cache_dir))
    assert summary.queries_used == budget
    assert observer.rows and observer.rows[-1].queries_used == budget
    for row in observer.rows:
        scores = row.scores
        for value in (scores.clone_accuracy, scores.fidelity_served, scores.fidelity_victim):
            assert 0.0 <= value <= 1.0


@pytest.mark.parametrize("name", sorted(SUITE))
def test_refuses_label_modes_its_paper_does_not_support(name):
    cls = ATTACKERS.get(name)
    for mode in ("soft", "hard", "topk"):
        if mode in cls.label_modes:
            cls.check(mode, cls.default_budget, 1_000_000)
        else:
            with pytest.raises(ArenaError, match=f"does not support --label {mode}"):
                cls.check(mode, cls.default_budget, 1_000_000)


def test_label_modes_follow_the_papers():
    modes = {name: set(ATTACKERS.get(name).label_modes) for name in SUITE}
    assert modes["maze"] == {"soft"} and modes["logp-clone"] == {"soft"}
    assert modes["dfms-hl"] == {"hard"} and modes["dfms-sl"] == {"soft"}
    for name in ("knockoff-adaptive", "jbda", "activethief-kcenter", "activethief-uncertainty", "augmented-queries"):
        assert modes[name] == {"soft", "hard", "topk"}


@pytest.mark.parametrize(
    "name,budget,pool,message",
    [
        ("knockoff-adaptive", 1300, 1200, "exceeds the query pool"),
        ("activethief-kcenter", 1300, 1200, "exceeds the query pool"),
        ("argmax-clone", 1300, 1200, "exceeds the query pool"),
        ("logp-clone", 1300, 1200, "exceeds the query pool"),
        ("activethief-uncertainty", 12, 1200, "too small"),
        ("maze", 1000, 1200, "at least 1920 queries"),
        ("jbda", 50, 1200, "at least 100"),
    ],
)
def test_refuses_impossible_budgets(name, budget, pool, message):
    cls = ATTACKERS.get(name)
    with pytest.raises(ArenaError, match=message):
        cls(cls.Params()).validate(sorted(cls.label_modes)[0], budget, pool)


def test_synthesising_attacks_are_not_bound_by_the_pool():
    for name in ("jbda", "augmented-queries", "maze", "dfms-hl"):
        cls = ATTACKERS.get(name)
        cls(cls.Params()).validate(sorted(cls.label_modes)[0], 200_000, 1200)


@pytest.mark.parametrize(
    "args",
    [
        ("-a", "dfms-hl", "-l", "soft"),
        ("-a", "maze", "-l", "hard"),
        ("-a", "logp-clone", "-l", "topk"),
        ("-a", "dfms-sl", "-l", "hard"),
    ],
)
def test_cli_refuses_unsupported_label_mode_with_exit_2(cli, tmp_path, cache_dir, args):
    result = cli("run", *args, "--device", "cpu", "--db", tmp_path / "x.db", "--cache-dir", cache_dir)
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "does not support --label" in lines[0]
    assert result.stdout == ""


def test_cli_lists_every_attack_with_its_modes_and_budget(cli):
    import json

    result = cli("list", "--format", "json")
    assert result.exit_code == 0
    rows = {row["name"]: row["description"] for row in json.loads(result.stdout) if row["kind"] == "attacker"}
    for name in SUITE:
        cls = ATTACKERS.get(name)
        assert f"default budget {cls.default_budget}" in rows[name]


def test_maze_gradient_estimate_points_along_the_true_gradient(mnist5k, tiny_victim):
    """Forward differences along many directions recover the white-box gradient's direction."""
    import torch.nn.functional as F

    from engines.attackers._generators import to_pixels
    from engines.attackers.maze import MazeParams, zeroth_order_backward

    torch.manual_seed(0)
    clone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1024, 10))
    pre = torch.randn(4, 1, 32, 32, requires_grad=True)
    params = MazeParams(ndirs=400, mu=1e-3)
    oracle = Oracle(SpyDefender(tiny_victim), 4 * 401, "soft", 10, (1, 32, 32), torch.device("cpu"))
    zeroth_order_backward(pre, clone, oracle, params, torch.Generator().manual_seed(1), torch.device("cpu"))
    estimate = pre.grad.clone()
    assert oracle.remaining == 0  # 4 points and 400 probes each, all counted
    white = pre.detach().clone().requires_grad_(True)
    x = to_pixels(white)
    probs = torch.softmax(tiny_victim(x), 1)
    neg_kl = -F.kl_div(F.log_softmax(clone(x), 1), probs, reduction="none").sum(1)
    (neg_kl.sum() / 4).backward()
    cosine = F.cosine_similarity(estimate.flatten(1), white.grad.flatten(1), dim=1)
    # a random 400-direction projection in 1024 dimensions keeps cos ~ sqrt(400/1024) = 0.62
    assert cosine.min() > 0.4, cosine


def test_knockoff_recipe_and_warm_start_are_recorded_with_the_match():
    params = MatchSpec(attacker="knockoff", attacker_params={"warm_start": True}).resolve().attacker_params
    for key in ("schedule", "augment", "epochs", "lr", "min_steps", "warm_epochs"):
        assert key in params, f"{key} is not recorded with the match"
    assert params["warm_start"] is True
    assert MatchSpec(attacker="knockoff").resolve().attacker_params["warm_start"] is False
    with pytest.raises(ArenaError, match="schedule"):
        MatchSpec(attacker="knockoff", attacker_params={"schedule": "linear"}).resolve()


@pytest.mark.parametrize("warm_start", [False, True])
def test_knockoff_checkpoint_clone_is_its_definition(warm_start, mnist5k, tiny_victim):
    """Checkpoint 1's clone equals its definition: with warm_start, checkpoint 0's weights
    trained `warm_epochs` more epochs on all answers (offset 101); without, a fresh clone."""
    import copy

    from engines.attackers._common import query_all, targets_from_answers, train_clone
    from engines.attackers.knockoff import knockoff_train_config
    from engines.training import fit

    cls = ATTACKERS.get("knockoff")
    params = cls.Params(epochs=1, min_steps=4, warm_start=warm_start, warm_epochs=2)
    states = []

    def context():
        return AttackContext(
            family="mnist",
            num_classes=10,
            image_shape=mnist5k.image_shape,
            mean=mnist5k.mean,
            std=mnist5k.std,
            pool=mnist5k.attacker_pool,
            device=torch.device("cpu"),
            seed=5,
            checkpoints=[20, 40],
            evaluate=lambda clone, used: states.append(copy.deepcopy(clone.state_dict())) or {},
        )

    def oracle():
        serve = lambda x: torch.softmax(tiny_victim(x), 1)  # noqa: E731
        return Oracle(serve, 40, "soft", 10, mnist5k.image_shape, torch.device("cpu"))

    ctx = context()
    cls(params).run(oracle(), ctx)
    assert len(states) == 2
    images = cls(params).query_images(ctx, 40)
    targets = targets_from_answers(query_all(oracle(), images, ctx), oracle())
    if warm_start:
        expected = ctx.build_clone()
        expected.load_state_dict(states[0])
        cfg = knockoff_train_config(params).model_copy(update={"epochs": 2})
        fit(expected, images, targets, cfg, ctx.device, ctx.generator(101))
    else:
        cfg = knockoff_train_config(params)
        expected = train_clone(ctx, images, targets, 101, cfg, arch=None, min_steps=4)
    for name, value in expected.state_dict().items():
        assert torch.equal(value, states[1][name]), name


@pytest.mark.parametrize("name", ["dfms-hl", "dfms-sl"])
def test_dfms_proxy_gan_from_the_cache_changes_nothing(name, tmp_path, mnist5k, tiny_victim):
    """The GAN stage restored from the artifact cache leaves the attack bit-identical: the same
    queries, the same clones at every checkpoint and the same final weights as a run without
    a cache; another seed or GAN setting is another cache entry."""
    params, mode, budget = SUITE[name]
    plain = run_direct(name, params, mode, budget, mnist5k, tiny_victim)
    store = ArtifactStore(tmp_path / "cache")
    first = run_direct(name, params, mode, budget, mnist5k, tiny_victim, artifacts=store)
    again = run_direct(name, params, mode, budget, mnist5k, tiny_victim, artifacts=store)
    entries = sorted((tmp_path / "cache" / "dfms-proxy-gan").glob("*.safetensors"))
    assert len(entries) == 1  # built by the first cached run, reused by the second
    for run in (first, again):
        assert [b.tolist() for b in run[2].batches] == [b.tolist() for b in plain[2].batches]
        assert run[3] == plain[3]
        for mine, theirs in zip(run[4].state_dict().values(), plain[4].state_dict().values(), strict=True):
            assert torch.equal(mine, theirs)
    run_direct(name, params, mode, budget, mnist5k, tiny_victim, seed=1, artifacts=store)
    run_direct(name, {**params, "gan_steps": 4}, mode, budget, mnist5k, tiny_victim, artifacts=store)
    assert len(list((tmp_path / "cache" / "dfms-proxy-gan").glob("*.safetensors"))) == 3
