"""`arena tui`: the interactive arena (Textual).

The UI process never imports torch: matches run in `arena worker` processes and the UI
observes them through the database; registry names come from a child process
(`arena.tui.catalog`). Entry point: `arena.tui.app.run_tui`.
"""
