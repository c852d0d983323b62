"""The benchmark on synthetic datasets written in the real file formats (a MATLAB v7.3 .mat with
MATLAB's 512-byte header, a VOCdevkit tree with palette PNGs and JPEGs), run through the `eval`
verb with a stand-in engine whose maps are read off the pictures: each region's grey level names
the concept that wins there. All pictures are 512 x 512 with edges on 64-pixel multiples, so the
224 x 224 scoring grid splits them exactly (a half = 112 columns, a quarter = 56) and every
expected number below is worked out by hand."""
import argparse
import json
import time

import numpy as np
import pytest
from PIL import Image

h5py = pytest.importorskip("h5py", reason="the bench extra (h5py) is needed to write a MATLAB v7.3 file")

from concept_attention_pack.cli import bench  # noqa: E402
from concept_attention_pack.cli.bench import datasets  # noqa: E402
from concept_attention_pack.cli.engine import MaskResult, MaskTask, Settings  # noqa: E402
from concept_attention_pack.cli.main import build_parser  # noqa: E402

SIZE = 512


def grey_for(concept_index: int) -> int:
    return 20 + 30 * concept_index


class PictureEngine:
    """Stands in for cli.engine: the concept with grey level 20 + 30 k wins where the picture has
    it (share 0.5, the others share the rest equally). Records what it was asked."""

    def __init__(self, fail=()):
        self.tasks, self.fail = [], set(fail)
        self.Settings, self.MaskTask = Settings, MaskTask

    def run_tasks(self, tasks, settings, servers=None, comfyui=None, progress=None):
        for task in tasks:
            self.tasks.append((task, settings, Image.open(task.image).size))
            if task.key in self.fail:
                yield MaskResult(task.key, None, "stand-in", 0.0, "server went away")
                continue
            grey = np.asarray(Image.open(task.image).convert("L")).astype(float)
            winner = np.clip(np.rint((grey - 20) / 30), 0, len(task.concepts) - 1).astype(int)
            wins = np.arange(len(task.concepts))[:, None, None] == winner[None]
            soft = np.where(wins, 0.5, 0.5 / (len(task.concepts) - 1)).astype(np.float32)
            yield MaskResult(task.key, soft, "stand-in", 0.0, None)


def columns(spec):
    """A 512 x 512 array from (first column, last column + 1, value) bands."""
    array = np.zeros((SIZE, SIZE), np.uint8)
    for start, stop, value in spec:
        array[:, start:stop] = value
    return array


# ------------------------------------------------------------------ ImageNet-Segmentation (.mat)

def write_matlab_v73(path, items):
    """What MATLAB's save -v7.3 writes for a struct `value` with fields img, gt (1x1 cells) and id:
    an HDF5 file with a 512-byte user block holding the MAT header, data under #refs#, arrays
    stored transposed, fields as N x 1 object references."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        value = f.create_group("value")
        value.attrs["MATLAB_class"] = np.bytes_("struct")
        img_refs, gt_refs, id_refs = [], [], []
        for i, (picture, mask, ident) in enumerate(items):
            img = refs.create_dataset(f"img{i}", data=picture.transpose(2, 1, 0))
            img.attrs["MATLAB_class"] = np.bytes_("uint8")
            gt = refs.create_dataset(f"gt{i}", data=mask.T)
            gt.attrs["MATLAB_class"] = np.bytes_("uint8")
            cell = refs.create_dataset(f"cell{i}", data=np.array([[gt.ref]], dtype=h5py.ref_dtype))
            cell.attrs["MATLAB_class"] = np.bytes_("cell")
            chars = np.frombuffer(ident.encode("utf-16-le"), dtype="<u2").reshape(-1, 1)
            name = refs.create_dataset(f"id{i}", data=chars)
            name.attrs["MATLAB_class"] = np.bytes_("char")
            name.attrs["MATLAB_int_decode"] = np.int32(2)
            img_refs.append(img.ref), gt_refs.append(cell.ref), id_refs.append(name.ref)
        for field, refs_of in (("img", img_refs), ("gt", gt_refs), ("id", id_refs)):
            value.create_dataset(field, data=np.array(refs_of, dtype=h5py.ref_dtype).reshape(-1, 1))
    header = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  6 10:00:00 2014 "
              b"HDF5 schema 1.00 .").ljust(116) + b"\0" * 8 + (0x0200).to_bytes(2, "little") + b"IM"
    with open(path, "r+b") as f:
        f.write(header)


def imagenet_items():
    # ground truth: left half; the picture's grey says where concept 0 (the class) wins.
    half = columns([(0, 256, 1)])
    cases = {
        "perfect": columns([(0, 256, 0), (256, 512, 1)]),          # class on the left half
        "empty": columns([(0, 512, 1)]),                           # never the class
        "top_half": np.vstack([np.full((256, SIZE), 0, np.uint8), np.full((256, SIZE), 1, np.uint8)]),
        "three_quarters": columns([(0, 384, 0), (384, 512, 1)]),
    }
    items = []
    for number, (case, winners) in enumerate(cases.items()):
        grey = grey_for(winners.astype(int)).astype(np.uint8)
        items.append((np.repeat(grey[..., None], 3, axis=2), half, f"n0208562{number}_{case}"))
    return items


@pytest.fixture
def imagenet_mat(tmp_path):
    path = tmp_path / "gtsegs_ijcv.mat"
    write_matlab_v73(path, imagenet_items())
    names = tmp_path / "names.json"
    names.write_text(json.dumps({f"n0208562{i}": n for i, n in enumerate(["dog", "cat", "bird", "fish"])}))
    return path, names


def run_eval(tmp_path, *argv, engine):
    """`concept_masks.py eval ...` as the tool parses it, run on the stand-in engine."""
    args = build_parser().parse_args(["eval", *map(str, argv), "--out", str(tmp_path / "out")])
    return bench.run_eval_command(args, engine=engine)


def test_matlab_file_has_the_header_and_the_layout_the_authors_loader_reads(imagenet_mat):
    path, _ = imagenet_mat
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file" and path.read_bytes()[126:128] == b"IM"
    with h5py.File(path, "r") as f:    # their access pattern: f[f['/value/gt'][i, 0]][0, 0]
        mask = np.array(f[f[f["/value/gt"][2, 0]][0, 0]]).transpose((1, 0))
        picture = np.array(f[f["/value/img"][2, 0]]).transpose((2, 1, 0))
    assert mask.shape == (SIZE, SIZE) and mask[0, 0] == 1 and mask[0, -1] == 0
    assert picture.shape == (SIZE, SIZE, 3) and picture[0, 0, 0] == grey_for(0) and picture[-1, 0, 0] == grey_for(1)


def test_imagenet_reader_gives_the_paper_concepts_caption_and_truth(imagenet_mat):
    path, names = imagenet_mat
    reader = datasets.ImageNetSegmentation(path, datasets.load_class_names(names))
    samples = list(reader)
    assert len(samples) == 4
    first = samples[0]
    assert first.concepts == ["dog", "background", "floor", "tree", "person", "grass", "face"]
    assert first.caption == "a dog" and first.labels == [1, 0, 0, 0, 0, 0, 0]
    assert first.key == "0000_n02085620_perfect" and first.image.size == (SIZE, SIZE)
    assert first.truth.shape == (SIZE, SIZE) and first.truth[:, :256].all() and not first.truth[:, 256:].any()


def test_imagenet_eval_reports_hand_computed_numbers(imagenet_mat, tmp_path):
    path, names = imagenet_mat
    engine = PictureEngine()
    code = run_eval(tmp_path, path, "--names", names, engine=engine)
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    split = report["splits"][0]
    assert split["benchmark"] == "imagenet-seg" and split["scored"] == 4 and split["failed"] == 0
    m = split["metrics"]
    # per image (in units of one 224 x 224 picture): correct 1, 1/2, 1/2, 3/4 -> 2.75 / 4
    assert m["accuracy"] == pytest.approx(0.6875)
    # object: inter .5 + 0 + .25 + .5, union .5 + .5 + .75 + .75 -> 1/2; background: 1.5 / 2.75
    assert m["miou"] == pytest.approx((0.5 + 1.5 / 2.75) / 2)
    assert m["paper_miou"] == pytest.approx(0.6875 / 1.3125)
    # AP of the class's map rescaled to 0..1 (as the authors' ImageNet script): 1, 1/2, 1/2,
    # 0.6875 (0.75 x 0.75 + 0.25 x 0.5)
    assert m["map"] == pytest.approx((1 + 0.5 + 0.5 + 0.6875) / 4)
    # the engine saw the protocol's pictures and settings
    task, settings, size = engine.tasks[0]
    assert size == (1024, 1024) and task.caption == "a dog"
    assert (settings.blocks, settings.noise_level, settings.seed_count, settings.blur) == ("14-17", 0.5, 5, True)
    assert settings.normalize_concepts and settings.max_megapixels >= 1024 * 1024 / 1e6
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| pixel accuracy | 68.75 | 83.07 |" in markdown
    assert "acc / (2 - acc) | 52.38 | 71.04 |" in markdown
    assert not list((tmp_path / "out" / "images" / "imagenet-seg").iterdir())  # pictures deleted once scored


def test_imagenet_eval_limit_and_failures(imagenet_mat, tmp_path):
    path, names = imagenet_mat
    engine = PictureEngine(fail={"0001_n02085621_empty"})
    assert run_eval(tmp_path, path, "--names", names, "--limit", 2, engine=engine) == 0
    split = json.loads((tmp_path / "out" / "report.json").read_text())["splits"][0]
    assert split["scored"] == 1 and split["failed"] == 1
    assert split["failures"] == [{"key": "0001_n02085621_empty", "error": "server went away"}]
    assert split["metrics"]["accuracy"] == 1.0 and len(engine.tasks) == 2


def test_imagenet_without_names_or_h5_file_says_what_to_do(imagenet_mat, tmp_path, capsys):
    path, names = imagenet_mat
    assert run_eval(tmp_path, path, engine=PictureEngine()) == 2
    assert "--names" in capsys.readouterr().err
    not_mat = tmp_path / "x.mat"
    not_mat.write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 200)  # an old (v5) MAT file
    assert run_eval(tmp_path, not_mat, "--names", names, engine=PictureEngine()) == 2
    assert "MATLAB v7.3" in capsys.readouterr().err


def test_authors_class_map_is_read_through_wordnet_lemmas(tmp_path):
    names = tmp_path / "imagenet_class_map.json"
    names.write_text(json.dumps({"categories": {"Chihuahua": "dog", "tabby": "cat"}}))
    lemmas = {"n02085620": "Chihuahua", "n02123045": "tabby"}
    name_of = datasets.load_class_names(names, lemma_of=lemmas.__getitem__)
    assert name_of("n02085620") == "dog" and name_of("n02123045") == "cat"


# ------------------------------------------------------------------ PascalVOC 2012

VOC_PALETTE = [0] * 768
for index in range(256):  # the VOC colour map (bit-interleaved), as the real PNGs carry
    r = g = b = 0
    c = index
    for j in range(8):
        r |= ((c >> 0) & 1) << (7 - j)
        g |= ((c >> 1) & 1) << (7 - j)
        b |= ((c >> 2) & 1) << (7 - j)
        c >>= 3
    VOC_PALETTE[3 * index:3 * index + 3] = [r, g, b]


def write_voc(root, items):
    voc = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    for name, labels, winners in items:
        png = Image.fromarray(labels, mode="P")
        png.putpalette(VOC_PALETTE)
        png.save(voc / "SegmentationClass" / f"{name}.png")
        grey = grey_for(winners.astype(int)).astype(np.uint8)
        Image.fromarray(grey).convert("RGB").save(voc / "JPEGImages" / f"{name}.jpg", quality=100)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{n}\n" for n, _, _ in items))
    return root / "VOCdevkit"


def voc_items():
    # concepts: background, floor, grass, tree, sky (0-4), then the classes present (5, 6, ...)
    dog = columns([(0, 256, 12), (256, 448, 0), (448, 512, 255)])          # dog | background | void
    dog_guess = columns([(0, 256, 5), (256, 512, 0)])                      # perfect off the void
    two = np.zeros((SIZE, SIZE), np.uint8)
    two[:256, :256], two[256:, :256] = 8, 15                               # cat top-left, person bottom-left
    two_guess = np.full((SIZE, SIZE), 1, np.uint8)                          # "floor" on the right ...
    two_guess[:256, :256], two_guess[256:, :256], two_guess[:256, 256:] = 5, 6, 6  # ... but person top-right
    plane = columns([(0, 128, 1)])
    plane_guess = columns([(0, 256, 5), (256, 512, 3)])                    # plane on the left half
    return [("2007_000001", dog, dog_guess), ("2007_000002", two, two_guess), ("2007_000003", plane, plane_guess)]


@pytest.fixture
def voc(tmp_path):
    return write_voc(tmp_path, voc_items())


def test_voc_reader_splits_and_concepts(voc):
    single = list(datasets.PascalVOC(voc, "single"))
    assert [s.key for s in single] == ["2007_000001", "2007_000003"]
    assert single[0].concepts == ["background", "floor", "grass", "tree", "sky", "dog"]
    assert single[0].caption == "a dog" and single[0].labels == [0, 0, 0, 0, 0, 1]
    assert set(np.unique(single[0].truth)) == {0, 1, 255}
    multi = list(datasets.PascalVOC(voc / "VOC2012", "multi"))
    assert len(multi) == 3 and multi[1].concepts[5:] == ["cat", "person"]
    assert multi[1].caption == "a cat,a person" and multi[1].labels == [0, 0, 0, 0, 0, 8, 15]


def test_voc_eval_reports_hand_computed_numbers_for_both_splits(voc, tmp_path):
    engine = PictureEngine()
    assert run_eval(tmp_path, voc.parent, engine=engine) == 0
    single, multi = json.loads((tmp_path / "out" / "report.json").read_text())["splits"]
    s = single["metrics"]
    # in columns of the 224 grid: dog picture 112 object + 84 background correct, 28 void;
    # plane picture: object 56 columns, predicted 112 -> 168 of 224 correct.
    assert single["scored"] == 2
    assert s["accuracy"] == pytest.approx(364 / 420)
    assert s["miou"] == pytest.approx((168 / 224 + 196 / 252) / 2)
    assert s["paper_miou"] == pytest.approx((364 / 420) / (2 - 364 / 420))
    assert s["accuracy_authors_voc"] == pytest.approx(728 / 868)
    # AP of the class's share (0.5 where it wins, 0.1 elsewhere; VOC: not rescaled), scores
    # [1 - share, share]: dog picture 0.9 (84 +) then 0.5 (112 +, 112 -): 84/196 + 112/196 x 196/308;
    # plane picture 0.9 (112 +), then 0.5 (112 +, 112 -): 1/2 + 1/2 x 2/3.
    assert s["map"] == pytest.approx((84 / 196 + 112 / 308 + 1 / 2 + 1 / 3) / 2)
    m = multi["metrics"]
    # units of 28 columns: background 9/13, plane 2/4, cat 2/2, dog 4/4, person 2/4; accuracy 19/23
    assert multi["scored"] == 3 and m["classes_scored"] == 5
    assert m["accuracy"] == pytest.approx(19 / 23)
    assert m["miou"] == pytest.approx((9 / 13 + 0.5 + 1 + 1 + 0.5) / 5)
    # the engine got the split's settings: blocks 14-18 with blur (single), 14-17 without (multi)
    by_split = {(t.key, s.blocks, s.blur) for t, s, _ in engine.tasks}
    assert ("2007_000001", "14-18", True) in by_split and ("2007_000002", "14-17", False) in by_split


def test_voc_ground_truth_in_colours_is_refused(tmp_path):
    voc = write_voc(tmp_path, voc_items()[:1])
    png = voc / "VOC2012" / "SegmentationClass" / "2007_000001.png"
    Image.open(png).convert("RGB").save(png)
    with pytest.raises(datasets.DatasetError, match="palette PNG"):
        datasets.PascalVOC(voc, "single")


def test_missing_voc_folder_is_a_clear_error(tmp_path, capsys):
    assert run_eval(tmp_path, tmp_path / "nothing", "--benchmark", "voc-single", engine=PictureEngine()) == 2
    assert "no PascalVOC 2012" in capsys.readouterr().err


def test_a_map_option_given_on_the_command_line_overrides_the_protocol_and_is_reported(imagenet_mat, tmp_path):
    path, names = imagenet_mat
    engine = PictureEngine()
    assert run_eval(tmp_path, path, "--names", names, "--limit", 1, "--blocks", "last 4", "--seeds", 2,
                    engine=engine) == 0
    _, settings, _ = engine.tasks[0]
    assert (settings.blocks, settings.seed_count, settings.noise_level) == ("last 4", 2, 0.5)
    split = json.loads((tmp_path / "out" / "report.json").read_text())["splits"][0]
    assert split["protocol"]["changed_from_protocol"] == {"blocks": "last 4", "seed_count": 2}
    assert "Changed from the paper's protocol" in (tmp_path / "out" / "report.md").read_text()
