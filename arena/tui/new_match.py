"""The new-match form: every name is picked from what the registries offer.

Cheap checks run as you type; on start, `arena run --enqueue --format json` validates the rest
in a child process (data available, budget fits the pool, device present); a refusal comes back
as `{"error": {"field", "message"}}` and its message is shown under that field. A valid match
is queued, a detached worker plays it, and the live view opens.
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, HorizontalGroup, VerticalGroup, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static

from arena.tui.catalog import Catalog
from arena.tui.launcher import FIELDS, FormError, MatchForm, check_form, enqueue, start_worker

LABELS = {
    "defender": "defender",
    "attacker": "attacker",
    "dataset": "data set",
    "pool": "query pool",
    "label_mode": "label mode",
    "budget": "budget",
    "seed": "seed",
    "device": "device",
}
SELECTS = ("defender", "attacker", "dataset", "pool", "label_mode", "device")


class NewMatchScreen(Screen):
    BINDINGS = [
        Binding("ctrl+s", "start", "Start match"),
        Binding("escape", "back", "Back"),
        Binding("f1", "app.help", "Help"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.catalog: Catalog | None = None
        self.ready = False  # the fields are mounted and filled
        self.starting = False

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="form-scroll"):
            yield Static("reading the registries…", id="form-intro")
            yield Static("", classes="error", id="err-form")
            with Horizontal(id="form-grid"):
                yield VerticalGroup(id="form-left", classes="form-column")
                yield VerticalGroup(id="form-right", classes="form-column")
            yield Static("", id="form-help")
            with Horizontal(id="form-buttons"):
                yield Button("Start match", id="start", variant="primary", disabled=True)
                yield Button("Back", id="back")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "new match"
        # The catalog may still be loading: the app calls these again when it arrives. (Not
        # `self.watch(self.app, ...)`: a watcher on the app keeps every closed form alive.)
        self.catalog_failed(self.app.catalog_error)
        self.catalog_ready(self.app.catalog)

    # -- catalog --------------------------------------------------------------------------------
    def catalog_failed(self, message: str | None) -> None:
        if message:
            self.query_one("#form-intro", Static).update(f"cannot read the registries: {message}")

    def catalog_ready(self, catalog: Catalog | None) -> None:
        if catalog is None or self.catalog is not None:
            return
        self.catalog = catalog
        self.call_later(self._build, catalog)

    async def _build(self, catalog: Catalog) -> None:
        fields = self._fields(catalog)
        half = (len(fields) + 1) // 2
        await self.query_one("#form-left", VerticalGroup).mount_all(fields[:half])
        await self.query_one("#form-right", VerticalGroup).mount_all(fields[half:])
        self._fields_mounted()

    def _fields(self, catalog: Catalog) -> list[VerticalGroup]:
        defaults = catalog.defaults
        options = {
            "defender": list(catalog.defenders),
            "attacker": list(catalog.attackers),
            "dataset": list(catalog.datasets),
            "pool": catalog.pools(),
            "device": list(catalog.devices),
        }
        attacker = defaults.get("attacker") if defaults.get("attacker") in catalog.attackers else options["attacker"][0]
        options["label_mode"] = list(catalog.attackers[attacker].label_modes)
        fields = []
        for name in FIELDS:
            if name in SELECTS:
                values = options[name]
                default = attacker if name == "attacker" else defaults.get(name)
                widget = Select(
                    [(v, v) for v in values],
                    value=default if default in values else values[0],
                    id=f"in-{name}",
                    compact=True,
                    allow_blank=False,
                )
            else:
                widget = Input(
                    str(defaults.get("seed", 0)) if name == "seed" else "",
                    id=f"in-{name}",
                    compact=True,
                    type="integer",
                    placeholder="default",
                )
            fields.append(
                VerticalGroup(
                    HorizontalGroup(Label(LABELS[name], classes="field-label"), widget, classes="field-row"),
                    Static("", classes="error", id=f"err-{name}"),
                    classes="field",
                    id=f"field-{name}",
                )
            )
        return fields

    def _fields_mounted(self) -> None:
        defaults = self.catalog.defaults
        self._attacker_changed(str(self.query_one("#in-attacker", Select).value), defaults.get("label_mode"))
        self.show_errors({})
        self.ready = True
        self.query_one("#form-intro", Static).update(
            "Pick the match; the budget defaults to the attacker's. Start: ctrl+s or Enter in a field."
        )
        self.query_one("#start", Button).disabled = False
        self.query_one("#in-defender", Select).focus()
        self._describe()

    def _attacker_changed(self, attacker: str, preferred: str | None = None) -> None:
        info = self.catalog.attackers.get(attacker) if self.catalog else None
        if info is None:
            return
        select = self.query_one("#in-label_mode", Select)
        current = preferred or (select.value if select.value is not Select.NULL else None)
        with self.prevent(Select.Changed):
            select.set_options([(m, m) for m in info.label_modes])
            select.value = current if current in info.label_modes else info.label_modes[0]
        self.query_one("#in-budget", Input).placeholder = f"default {info.default_budget}"

    def _describe(self) -> None:
        if not self.ready:
            return
        form = self.read_form()
        attacker = self.catalog.attackers.get(form.attacker)
        lines = [
            f"defender: {self.catalog.defenders.get(form.defender, '')}",
            f"attacker: {attacker.description if attacker else ''}",
            f"data set: {self.catalog.datasets.get(form.dataset, '')}",
        ]
        self.query_one("#form-help", Static).update("\n".join(lines))

    # -- the form -------------------------------------------------------------------------------
    def read_form(self) -> MatchForm:
        values = {}
        for name in FIELDS:
            widget = self.query_one(f"#in-{name}")
            if isinstance(widget, Select):
                values[name] = "" if widget.value is Select.NULL else str(widget.value)
            else:
                values[name] = widget.value
        return MatchForm(**values)

    def show_errors(self, errors: dict[str, str], form_error: str = "") -> None:
        for name in FIELDS:
            self._set_error(f"#err-{name}", errors.get(name, ""))
        self._set_error("#err-form", form_error)

    def _set_error(self, selector: str, message: str) -> None:
        widget = self.query_one(selector, Static)
        widget.update(message)
        widget.display = bool(message)

    def validate(self) -> dict[str, str]:
        errors = check_form(self.read_form(), self.catalog) if self.catalog else {}
        self.show_errors(errors)
        return errors

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        if not self.ready:
            return
        if event.select.id == "in-attacker":
            self._attacker_changed(str(event.value))
        self.validate()
        self._describe()

    @on(Input.Changed)
    def _input_changed(self) -> None:
        if self.ready:
            self.validate()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#start")
    def _start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#back")
    def _back_pressed(self) -> None:
        self.action_back()

    # -- starting -------------------------------------------------------------------------------
    def action_start(self) -> None:
        if not self.ready or self.starting or self.validate():
            return
        self.starting = True
        self.query_one("#start", Button).disabled = True
        self._set_error("#err-form", "")
        self.query_one("#form-intro", Static).update("checking and queueing the match (`arena run --enqueue`)…")
        self._launch(self.read_form())

    @work(thread=True, exclusive=True, exit_on_error=False, group="launch")
    def _launch(self, form: MatchForm) -> None:
        settings = self.app.settings
        try:
            match_id = enqueue(form, settings)
        except FormError as exc:
            self.app.call_from_thread(self._refused, exc)
            return
        process = start_worker(match_id, settings)
        self.app.call_from_thread(self._started, match_id, process)

    def _refused(self, error: FormError) -> None:
        self.starting = False
        self.query_one("#start", Button).disabled = False
        self.query_one("#form-intro", Static).update("the arena refused this match:")
        if error.field:
            self.show_errors({error.field: str(error)})
            self.query_one(f"#in-{error.field}").focus()
        else:
            self.show_errors({}, str(error))

    def _started(self, match_id: int, process) -> None:
        self.app.match_started(match_id, process)

    def action_back(self) -> None:
        if not self.starting:
            self.app.pop_screen()
