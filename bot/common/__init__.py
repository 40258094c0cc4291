"""The ground every stage stands on: settings, errors, handles, and the plumbing of a long-running process.

In: `config.toml` and the environment (`config`), what any stage writes or prints. Out: one typed
`Settings` object; `UserError` and `inert` (one-line errors, remote text with no control sequences or
secrets: `errors`); what an X or a Bluesky handle is and the model name made of handles (`handles`);
whole-or-nothing file writes (`files`); log lines that say which request they are about (`logs`);
progress bars (`progress`); `/healthz` and `/metrics` served on one port (`monitoring`); and the named
crash points of the crash tests (`failpoints`). Nothing here imports a stage.
"""
