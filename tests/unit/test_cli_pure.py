"""The command-line tool's pieces that need no ComfyUI: the workflow it builds, inputs, shards,
working sizes and the maps' round trip, the parser's hints."""
from __future__ import annotations

import importlib
import io
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from conftest import PACK, ROOT

engine = importlib.import_module(PACK + ".cli.engine")
workflow = importlib.import_module(PACK + ".cli.workflow")
inputs = importlib.import_module(PACK + ".cli.inputs")
images = importlib.import_module(PACK + ".cli.images")
inprocess = importlib.import_module(PACK + ".cli.inprocess")
main = importlib.import_module(PACK + ".cli.main")
mask_command = importlib.import_module(PACK + ".cli.mask_command")


def test_default_workflow_is_the_encode_path_with_the_shipped_files():
    settings = engine.Settings(seed=7, seed_count=5, blocks="14-17", refine="guided")
    prompt = workflow.build_prompt(workflow.default_workflow(settings), "a.png [temp]", ["cat", "background"], "",
                                   settings)
    assert prompt["unet"]["inputs"]["unet_name"] == "flux1-schnell.safetensors"
    assert prompt["clip"]["inputs"] == {"clip_name1": "t5xxl_fp16.safetensors", "clip_name2": "clip_l.safetensors",
                                        "type": "flux"}
    assert prompt["vae"]["inputs"]["vae_name"] == "ae.safetensors"
    shipped = json.loads((ROOT / "workflows" / "api" / "photo_mask_new_background.json").read_text())
    assert {n["inputs"].get("unet_name") for n in shipped.values()} >= {prompt["unet"]["inputs"]["unet_name"]}
    saliency = prompt["saliency"]["inputs"]
    assert (saliency["source"], saliency["mask_mode"], saliency["seed"], saliency["seed_count"],
            saliency["refine"]) == ("latent", "soft", 7, 5, "guided")
    assert prompt["attention"]["inputs"]["concepts"] == "cat\nbackground"
    assert prompt["attention"]["inputs"]["blocks"] == "14-17"
    assert prompt["image"]["inputs"]["image"] == "a.png [temp]" and "conditioning" not in saliency
    assert prompt[workflow.MASKS_OUT]["class_type"] == "PreviewImage"  # temp files, not the user's output folder


def test_caption_becomes_the_encode_prompt():
    settings = engine.Settings()
    prompt = workflow.build_prompt(workflow.default_workflow(settings), "a.png", ["a", "b"], "a photo of a cat",
                                   settings)
    assert prompt[workflow.PROMPT]["inputs"] == {"clip": ["clip", 0], "text": "a photo of a cat"}
    assert prompt["saliency"]["inputs"]["conditioning"] == [workflow.PROMPT, 0]


def test_a_shipped_api_workflow_works_as_a_template_and_is_pruned_to_the_masks(tmp_path):
    template = workflow.load_template(ROOT / "workflows" / "api" / "photo_mask_new_background.json")
    prompt = workflow.build_prompt(template, "x.png", ["person", "background"], "", engine.Settings())
    kinds = sorted(n["class_type"] for n in prompt.values())
    assert "KSampler" not in kinds and "SaveImage" not in kinds  # only what Concept Saliency needs
    assert {"ConceptSaliency", "ConceptAttentionFlux", "LoadImage", "VAEEncode", "MaskToImage",
            "PreviewImage"} <= set(kinds)


def test_templates_the_tool_cannot_use_are_refused_with_the_reason(tmp_path):
    ui_format = tmp_path / "ui.json"
    ui_format.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(workflow.WorkflowError, match="Export \\(API\\)"):
        workflow.load_template(ui_format)
    graph = workflow.default_workflow(engine.Settings())
    del graph["saliency"]
    no_saliency = tmp_path / "no_saliency.json"
    no_saliency.write_text(json.dumps(graph))
    with pytest.raises(workflow.WorkflowError, match="exactly one ConceptSaliency node, found 0"):
        workflow.load_template(no_saliency)


def test_inputs_folders_files_globs_keys_and_the_output_folder_skipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos" / "a").mkdir(parents=True)
    (tmp_path / "photos" / "out").mkdir()
    for name in ("photos/1.png", "photos/a/2.JPG", "photos/notes.txt", "loose.webp", "photos/out/old.png"):
        (tmp_path / name).write_bytes(b"x")
    found, warnings = inputs.gather(["photos", "loose.webp", "*.webp", "missing.png", "none*.png"],
                                    exclude=tmp_path / "photos" / "out")
    assert [key for key, _ in found] == ["1.png", "a/2.JPG", "loose.webp"]
    assert warnings == ["missing.png: no such file or folder", "none*.png: no file matches this pattern"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "1.png").write_bytes(b"y")
    with pytest.raises(inputs.InputError, match="would both be saved as '1.png'"):
        inputs.gather(["photos", "other"])


def test_shards_split_the_keys_once_and_stably():
    keys = [f"pic{i}.png" for i in range(200)]
    shards = [[k for k in keys if inputs.in_shard(k, (i, 3))] for i in (1, 2, 3)]
    assert sorted(sum(shards, [])) == sorted(keys) and all(len(s) > 40 for s in shards)
    assert [inputs.in_shard("photo.jpg", (i, 3)) for i in (1, 2, 3)].count(True) == 1
    for bad in ("0/3", "4/3", "1-3", "x/y"):
        with pytest.raises(inputs.InputError, match="--shard"):
            inputs.parse_shard(bad)


def test_working_size_is_capped_and_a_multiple_of_16_and_maps_come_back_at_the_picture_size():
    assert images.working_size(1024, 768, 1.0) == (1024, 768)
    assert images.working_size(4000, 3000, 1.0) == (1152, 864)  # 1 MP, sides rounded to tokens
    assert images.working_size(33, 47, 1.0) == (32, 48)
    maps = np.zeros((2, 48, 32), np.uint8)
    maps[0, :24], maps[1, 24:] = 255, 255
    pngs = []
    for plane in maps:
        out = io.BytesIO()
        Image.fromarray(np.repeat(plane[..., None], 3, axis=2)).save(out, format="PNG")
        pngs.append(out.getvalue())
    soft = images.decode_maps(pngs, (33, 47))
    assert soft.shape == (2, 47, 33) and soft.dtype == np.float32
    assert soft[0, 0, 0] == 1.0 and soft[1, -1, -1] == 1.0
    np.testing.assert_allclose(soft.sum(0), 1.0, atol=1e-6)


def test_concepts_are_checked_before_anything_runs():
    for bad, reason in ((["cat"], "at least two"), (["cat", "Cat"], "distinct"), (["a,b", "c"], "comma")):
        with pytest.raises(ValueError, match=reason):
            engine.check_concepts(bad)


def test_concepts_whose_file_names_would_collide_get_one_file_each(tmp_path):
    """Two emoji once both became 'concept', and 'sky blue' and 'sky_blue' one 'sky_blue': one
    mask was written over the other and the manifest pointed both concepts at the survivor."""
    outputs = mask_command.Outputs(tmp_path, None)
    for concepts in (["🐶", "🐱"], ["🐶", "🐶!"], ["sky blue", "sky_blue", "sea"], ["Sky", "sky?"]):
        soft = np.zeros((len(concepts), 8 * len(concepts), 8), np.float32)
        for k in range(len(concepts)):
            soft[k, 8 * k:8 * (k + 1)] = 1.0  # concept k owns band k
        task = engine.MaskTask("pic.png", tmp_path / "pic.png", concepts)
        result = engine.MaskResult("pic.png", soft, "test", 0.0, None, (8, 8 * len(concepts)), task)
        written = mask_command.save_result(result, outputs, engine.Settings(), segmentation=False)["masks"]
        assert list(written) == concepts and len({f.casefold() for f in written.values()}) == len(concepts)
        for k, concept in enumerate(concepts):
            mask = np.asarray(Image.open(tmp_path / written[concept]))
            assert (mask[8 * k:8 * (k + 1)] == 255).all() and mask.sum() == 255 * 64, (concept, written)
    assert mask_command.mask_names(["🐶", "🐱"]) == ["dog_face", "cat_face"]  # readable, not numbered
    assert mask_command.mask_names(["sky blue", "sky_blue", "sea"]) == ["sky_blue-1", "sky_blue-2", "sea"]
    assert mask_command.mask_names(["a b", "a_b", "a_b-2"]) == ["a_b-1", "a_b-2-2", "a_b-2"]
    shared = {"key": "pic.png", "concepts": ["🐶", "🐱"],  # what an earlier version wrote
              "masks": {"🐶": "masks/pic.png.concept.png", "🐱": "masks/pic.png.concept.png"}}
    (tmp_path / "masks" / "pic.png.concept.png").write_bytes(b"")
    assert not outputs.is_done(shared, {"concepts": ["🐶", "🐱"]}, segmentation=False)  # redone on resume


def stand_in_engine(fail=()):
    """Stands in for engine.run_tasks: even maps for every picture that can be read, an item
    error (as ComfyUI gives one) for the keys in `fail`."""
    def run_tasks(tasks, settings, servers=None, comfyui=None, progress=None):
        for task in tasks:
            prepared = engine.prepare(task, settings)  # every picture here can be read
            if task.key in fail:
                yield engine.failed(task, "stand-in", 0.0, "ConceptSaliency: out of memory", prepared.size)
                continue
            width, height = prepared.size
            soft = np.full((len(task.concepts), height, width), 1 / len(task.concepts), np.float32)
            yield engine.MaskResult(task.key, soft, "stand-in", 0.0, None, prepared.size, task)
    return run_tasks


def test_a_rerun_left_with_unreadable_files_only_succeeds_without_loading_comfyui(tmp_path, monkeypatch, capsys):
    """Unreadable files cannot be fixed by a rerun: they are reported, never make the status 1
    once the readable pictures are done, and never cost a ComfyUI load (the in-process engine
    loads it at the first picture it can read)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("good.png", "also_good.png"):
        Image.new("RGB", (32, 32), (40, 90, 200)).save(photos / name)
    argv = ["mask", str(photos), "--concepts", "sky, background", "--out", str(tmp_path / "out")]
    with monkeypatch.context() as patched:
        patched.setattr(engine, "run_tasks", stand_in_engine())
        assert main.main(argv) == 0
    (photos / "notes.png").write_text("not a picture")
    (photos / "cut.png").write_bytes((photos / "good.png").read_bytes()[:60])

    def no_load(*args, **kwargs):
        raise AssertionError("ComfyUI loaded for a run with no picture it could read")
    monkeypatch.setattr(inprocess, "InProcessComfy", no_load)
    monkeypatch.setattr(inprocess, "find_comfyui", lambda explicit=None: tmp_path)
    capsys.readouterr()
    assert main.main(argv) == 0  # the real engine, in-process
    err = capsys.readouterr().err
    assert "2 of 4 pictures already done" in err and "done: 0 masked" in err and "2 failed" in err
    assert "failed: notes.png: cannot read" in err and "failed: cut.png: cannot read" in err
    assert "2 of them cannot be read as pictures" in err
    assert main.main(argv) == 0  # and again: nothing changed
    only_bad = ["mask", str(photos / "notes.png"), "--concepts", "sky, background", "--out", str(tmp_path / "o2")]
    assert main.main(only_bad) == 1  # no picture has masks: nothing could be done
    monkeypatch.setattr(engine, "run_tasks", stand_in_engine(fail={"also_good.png"}))
    (photos / "notes.png").unlink()
    (photos / "cut.png").unlink()
    assert main.main([*argv, "--redo"]) == 1  # a picture that can be read failed: a rerun can do it
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main.main(["mask", "--help"])
    assert "Exit status: 0 when every picture that can be read has its masks" in " ".join(
        capsys.readouterr().out.split())  # the rule is in the tool's help


class FailingEngine:
    """Stands in for cli.engine in `eval`: every image fails, most with one reason, one with a
    reason naming its own file (as an unreadable picture's does)."""
    Settings, MaskTask = engine.Settings, engine.MaskTask

    def run_tasks(self, tasks, settings, servers=None, comfyui=None, progress=None):
        for k, task in enumerate(tasks):
            error = (f"cannot read {task.image} as an image (truncated)" if k == 2 else
                     "no server left (http://gpu1:8188 does not answer)")
            yield engine.MaskResult(task.key, None, "stand-in", 0.0, error)


def test_eval_that_scores_nothing_says_why_on_the_console_and_in_the_report(tmp_path, capsys):
    voc = tmp_path / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    names = [f"2007_00000{i}" for i in range(1, 5)]
    labels = np.zeros((64, 64), np.uint8)
    labels[:, :32] = 12  # a dog on the left
    for name in names:
        Image.fromarray(labels, mode="L").save(voc / "SegmentationClass" / f"{name}.png")
        Image.new("RGB", (64, 64)).save(voc / "JPEGImages" / f"{name}.jpg")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names))
    bench = importlib.import_module(PACK + ".cli.bench")
    args = main.build_parser().parse_args(["eval", str(voc), "--benchmark", "voc-single", "--out", str(tmp_path / "out")])
    assert bench.run_eval_command(args, engine=FailingEngine()) == 1
    console = capsys.readouterr().out
    report = (tmp_path / "out" / "report.md").read_text()
    for text in (console, report):
        assert "(0 scored, 4 failed; all images)" in text and "No image was scored" in text
        assert "| metric |" not in text  # no empty table
        assert "- 3 x no server left (http://gpu1:8188 does not answer) (2007_000001, 2007_000002, 2007_000004)" in text
        assert "- 1 x cannot read " in text and "<image>.png as an image (truncated) (2007_000003)" in text


@pytest.mark.comfy
def test_noise_level_help_and_tooltip_name_the_family_of_each_sigma_comfyui_gives(capsys):
    """Position 0.5 is a different sigma per family (the schedule's shift): a bare 'about 0.76
    for dev' reads as if it held for every dev model."""
    import types
    import comfy.model_base as base
    import comfy.supported_models as models

    def sigma(config, kind=base.ModelType.FLUX):  # the schedule get_model builds; as nodes.api.noise_sigma
        schedule = base.model_sampling(types.SimpleNamespace(sampling_settings=config.sampling_settings), kind)
        return schedule.percent_to_sigma(1.0 - 0.5)
    with pytest.raises(SystemExit):
        main.main(["mask", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"sigma {sigma(models.FluxSchnell, base.ModelType.FLOW):g} for Flux.1 schnell" in text
    assert f"about {sigma(models.Flux):.2f} for Flux.1 dev (shift 1.15" in text
    if hasattr(models, "Flux2"):  # ComfyUI 0.3.64 has no Flux.2
        assert f"about {sigma(models.Flux2):.3f} for Flux.2 dev and Klein (shift 2.02)" in text
    tooltip = next(i.tooltip for i in importlib.import_module(PACK + ".nodes.concept_nodes").ConceptSaliency
                   .define_schema().inputs if i.id == "noise_level")
    assert f"about {sigma(models.Flux):.2f} for Flux.1 dev" in tooltip and "0.88 for Flux.2" in tooltip


def test_unknown_flags_get_the_closest_known_one(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.main(["mask", "x", "--concepts", "a, b", "--out", "o", "--noise-levle", "0.3"])
    assert exit_info.value.code == 2
    assert "--noise-levle: did you mean --noise-level?" in capsys.readouterr().err


MASK = ["mask", "photos", "--concepts", "sky, background", "--out", "out"]


def test_quiet_and_verbose_are_taken_before_or_after_the_verb_and_are_in_each_help(capsys):
    parse = main.build_parser().parse_args
    for argv in (["--quiet", "--verbose", *MASK], [*MASK, "--quiet", "--verbose"],
                 ["--quiet", *MASK, "--verbose"], ["eval", "gt.mat", "--verbose", "--quiet"]):
        args = parse(argv)
        assert (args.quiet, args.verbose) == (True, True), argv
    assert (parse(MASK).quiet, parse(MASK).verbose) == (False, False)
    for verb in ([], ["mask"], ["eval"]):
        with pytest.raises(SystemExit):
            main.main([*verb, "--help"])
        text = capsys.readouterr().out
        assert "--quiet" in text and "--verbose" in text and "before or after the verb" in text, verb


def test_bad_option_values_are_usage_errors_not_sent_to_a_server(capsys):
    """A value the node would refuse fails here with the option's name: on a server, ComfyUI's
    validation refuses the prompt, which counts as that server failing."""
    cases = [("--seeds", "0", "whole number from 1 to 16"), ("--seeds", "-1", "from 1 to 16"),
             ("--seeds", "five", "received 'five'"), ("--seeds", "17", "from 1 to 16"),
             ("--seed", "-1", "whole number from 0"), ("--noise-level", "1.5", "number from 0 to 1"),
             ("--noise-level", "nan", "from 0 to 1"), ("--threshold", "2", "from 0 to 1"),
             ("--in-flight", "0", "at least 1"), ("--timeout", "-5", "above 0"),
             ("--max-megapixels", "0", "above 0"), ("--blocks", "lst 4", "could not read 'lst 4'"),
             ("--shard", "0/3", "1 <= i <= N"), ("--concepts", "sky", "need at least two")]
    for flag, value, reason in cases:
        with pytest.raises(SystemExit) as exit_info:
            main.build_parser().parse_args([*MASK, flag, value])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f"argument {flag}: " in err and reason in err, (flag, value, err)
    for argv in (["--seeds", "0"], ["--limit", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main.build_parser().parse_args(["eval", "gt.mat", *argv])
        assert exit_info.value.code == 2 and f"argument {argv[0]}: " in capsys.readouterr().err
    good = main.build_parser().parse_args([*MASK, "--seeds", "5", "--seed", str(2**64 - 1), "--blocks", "auto",
                                           "--noise-level", "0", "--shard", "2/3"])
    assert (good.seeds, good.seed, good.blocks, good.noise_level, good.shard) == (5, 2**64 - 1, "auto", 0.0, (2, 3))
    assert good.concepts == ["sky", "background"]


def test_an_option_of_another_verb_is_named_as_such(capsys):
    with pytest.raises(SystemExit):
        main.main([*MASK, "--names", "classes.json"])
    err = capsys.readouterr().err
    assert "--names is an option of 'eval'" in err and "did you mean --names" not in err


def test_eval_verb_is_there_exactly_when_cli_bench_provides_it():
    parser = main.build_parser()
    verbs = next(a for a in parser._actions if a.dest == "verb").choices
    try:
        importlib.import_module(PACK + ".cli.bench").add_eval_command
        has_eval = True
    except (ImportError, AttributeError):
        has_eval = False
    assert ("eval" in verbs) == has_eval and "mask" in verbs


def cli_imports() -> dict[str, set[str]]:
    """cli's modules (dotted, under cli) -> the cli modules each imports, at the top or inside a
    function: a lazy import hides a circle from Python, not from a reader."""
    import ast
    modules = {}  # dotted name -> (file, its package's parts)
    for path in (ROOT / "cli").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = (path, parts[:-1])
    graph = {}
    for name, (path, package) in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            for alias in node.names:
                for candidate in (".".join(base + [alias.name]), ".".join(base)):
                    if candidate in modules and candidate != name:
                        edges.add(candidate)
                        break
        graph[name] = edges
    return graph


def test_cli_modules_import_no_circle_and_no_verb_imports_another():
    graph = cli_imports()
    assert {"cli.engine", "cli.inprocess", "cli.servers", "cli.bench"} <= graph.keys()

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph[start])
    circles = sorted(name for name in graph if reaches(name, name))
    assert circles == [], {name: sorted(graph[name]) for name in circles}
    assert "cli.mask_command" not in graph["cli.bench"]  # eval's options come from cli.options
    assert "cli.engine" not in graph["cli.inprocess"] | graph["cli.servers"]  # the types are in cli.tasks
