import torch

from engines.artifacts import ArtifactStore, artifact_key


def _build(counter):
    def build():
        counter.append(1)
        return {"w": torch.arange(6.0).view(2, 3)}, {"note": "built"}

    return build


def test_key_depends_on_every_field():
    assert artifact_key("victim", {"a": 1, "b": 2}) == artifact_key("victim", {"b": 2, "a": 1})
    assert artifact_key("victim", {"a": 1}) != artifact_key("victim", {"a": 2})
    assert artifact_key("victim", {"a": 1}) != artifact_key("defender", {"a": 1})


def test_second_request_reuses(tmp_path):
    store, built = ArtifactStore(tmp_path), []
    _, meta, reused = store.get_or_build("victim", {"x": 1}, _build(built))
    assert not reused and meta == {"note": "built"}
    tensors, _, reused = store.get_or_build("victim", {"x": 1}, _build(built))
    assert reused and len(built) == 1
    assert torch.equal(tensors["w"], torch.arange(6.0).view(2, 3))


def test_corrupt_artifact_is_rebuilt_not_trusted(tmp_path):
    store, built = ArtifactStore(tmp_path), []
    store.get_or_build("victim", {"x": 1}, _build(built))
    weights = next((tmp_path / "victim").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # flip one byte of the tensor data
    weights.write_bytes(bytes(data))
    _, _, reused = store.get_or_build("victim", {"x": 1}, _build(built))
    assert not reused and len(built) == 2


def test_truncated_or_missing_metadata_is_rebuilt(tmp_path):
    store, built = ArtifactStore(tmp_path), []
    store.get_or_build("victim", {"x": 1}, _build(built))
    next((tmp_path / "victim").glob("*.json")).write_text("{not json")
    _, _, reused = store.get_or_build("victim", {"x": 1}, _build(built))
    assert not reused and len(built) == 2
