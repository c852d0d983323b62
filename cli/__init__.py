"""The pack's command-line tool (concept_masks.py at the pack root): masks for whole folders, run
in-process on a local ComfyUI or across many ComfyUI servers through their HTTP API.

engine.run_tasks is the one entry point both verbs use: `mask` (cli.mask_command) and `eval`
(cli.bench, when present)."""
