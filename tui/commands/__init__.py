"""The verbs of `ladder`, one module each, with a `run(args) -> int` that `tui.cli` calls with
the parsed command line and whose result is the exit code. `options` holds what `chat` and
`ask` share (choosing the models, the scenario and the settings); `output` what several print."""
