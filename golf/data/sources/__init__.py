"""One file per data source. A module here that defines `add_parser(sub)` and `run(args)` is a
`python -m golf.data.prepare` subcommand: adding a source is adding its file, nothing else.
(splits.py is their shared helper: it has no `run`.) None of this ships in the packed script;
a submission trains on shards that already exist."""
