"""The web page's request handler and server (tools/app.py) with tiny untrained AttnGAN, SSA-GAN and GAN-INT-CLS
run folders: images of every stage, attention maps, masks, DAMSM scores, unknown words, limits, queueing, HTTP."""
import base64
import io
import json
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch
from PIL import Image

from main import main as main_entry
from miscc.config import RUN_CONFIG, load_config
from tests.helpers import RUN_CONFIGS, TINY_RUN, small_config, tiny_encoders, tiny_run, tiny_shapes
from tools import app as app_module
from tools.app import App, AppModel, load_models, make_server, run_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{family: run folder} of untrained tiny generators sharing one pair of untrained DAMSM encoders."""
    data = tiny_shapes(tmp_path_factory.mktemp("data"))
    net_e = tiny_encoders(small_config(RUN_CONFIGS["attngan"], data, **TINY_RUN), tmp_path_factory.mktemp("damsm"))
    root = tmp_path_factory.mktemp("runs")
    return {family: tiny_run(root, family, data, net_e) for family in RUN_CONFIGS}


@pytest.fixture(scope="module")
def app(runs):
    args = app_module.argparse.Namespace(run=[runs["attngan"], runs["ssagan"], runs["gan_int_cls"]], cfg_file=None,
                                         overrides=[], gpu_id=None, data_dir=None, manualSeed=None)
    return App(load_models(args), max_variants=6)


def _png(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def _ok(app, **payload):
    status, answer = app.handle(payload)
    assert status == 200, answer
    return answer


def test_attngan_images_maps_scores_and_grid(app):
    answer = _ok(app, model=0, sentence="A red circle, on a white background!", variants=3, seed=5)
    assert answer["words"] == ["a", "red", "circle", "on", "a", "white", "background"]
    assert answer["dropped"] == [] and answer["warnings"] == []
    assert [v["index"] for v in answer["variants"]] == [0, 1, 2]
    for v in answer["variants"]:
        assert [_png(s["png"]).size for s in v["stages"]] == [(16, 16), (32, 32)]  # BRANCH_NUM 2, BASE_SIZE 16
        assert len(v["attention"]) == 1 and "stage 2" in v["attention"][0]["label"]  # the one attention stage
        maps = v["attention"][0]["maps"]
        assert [m["word"] for m in maps] == answer["words"]
        assert all(_png(m["png"]).size == (64, 64) for m in maps)
        assert v["masks"] == [] and -1.0 <= v["score"] <= 1.0
    assert len({v["stages"][-1]["png"] for v in answer["variants"]}) == 3  # different noise per variant
    grid = _png(answer["grid"])
    assert grid.width == 3 * (128 + 2) and grid.height > 128 + 14  # three tiles under the sentence
    again = _ok(app, model=0, sentence="A red circle, on a white background!", variants=3, seed=5)
    assert [v["stages"][-1]["png"] for v in again["variants"]] == [v["stages"][-1]["png"] for v in answer["variants"]]
    other = _ok(app, model=0, sentence="A red circle, on a white background!", variants=3, seed=6)
    assert other["variants"][0]["stages"][-1]["png"] != answer["variants"][0]["stages"][-1]["png"]


def test_scores_are_damsm_cosines(app):
    """The score is the cosine of the DAMSM image code of the last stage and the sentence code."""
    model = app.models[0]
    answer = _ok(app, model=0, sentence="a blue square", variants=2, seed=1, truncation=0.5)
    with torch.no_grad():
        ids = torch.tensor([[model.dataset.wordtoix[w] for w in ("a", "blue", "square")]])
        _, sent = model.text_encoder(ids, torch.tensor([3]))
        from trainers.sampling import noise_for
        noise = noise_for(2, model.cfg.GAN.Z_DIM, "cpu", torch.Generator().manual_seed(1), 0.5)
        words, _ = model.text_encoder(ids.repeat(2, 1), torch.tensor([3, 3]))
        torch.manual_seed(1)  # the conditioning augmentation draws from the global RNG
        stages, _ = model.spec.generate_stages(model.net, noise, sent.repeat(2, 1), words, ids.repeat(2, 1) == 0)
        code = model.image_encoder(stages[-1])[1]
    expected = torch.nn.functional.cosine_similarity(code, sent.repeat(2, 1)).tolist()
    assert [v["score"] for v in answer["variants"]] == pytest.approx(expected, abs=1e-5)


def test_ssagan_masks_and_gan_int_cls_images_only(app):
    ssa = _ok(app, model=1, sentence="a green triangle", variants=2, seed=0)
    for v in ssa["variants"]:
        assert [_png(s["png"]).size for s in v["stages"]] == [(32, 32)]  # cfg/shapes_ssa.yml: 32 px
        assert [m["label"] for m in v["masks"]] == ["mask 4×4", "mask 8×8", "mask 16×16", "mask 32×32"]
        assert _png(v["masks"][-1]["png"]).mode == "L" and v["attention"] == []
    cls = _ok(app, model=2, sentence="a green triangle", variants=2, seed=0)
    for v in cls["variants"]:
        assert [_png(s["png"]).size for s in v["stages"]] == [(64, 64)]
        assert v["attention"] == [] and v["masks"] == [] and -1.0 <= v["score"] <= 1.0


def test_unknown_words_dropped_with_suggestions(app):
    answer = _ok(app, model=0, sentence="a red zebra circel", variants=1, seed=0)
    assert answer["words"] == ["a", "red"]
    assert answer["dropped"][0]["word"] == "zebra"
    assert answer["dropped"][1]["word"] == "circel" and answer["dropped"][1]["suggestions"][0] == "circle"
    status, answer = app.handle({"model": 0, "sentence": "zebra giraffe", "variants": 2})
    assert status == 400 and "None of the words is in this model's vocabulary" in answer["error"]
    assert [d["word"] for d in answer["dropped"]] == ["zebra", "giraffe"]
    status, answer = app.handle({"model": 0, "sentence": " ?! ", "variants": 2})
    assert status == 400 and "no words" in answer["error"]


def test_bert_attngan_word_pieces_cut_and_attention_of_every_stage(runs, minilm_dir, tmp_path):
    """BERT-AttnGAN (cfg/shapes_bert_attn.yml's text side with BERT-AttnGAN's G: B_INIT_ATTENTION, bilinear, 32 and
    64 px, as cfg/bird_bert_attn2.yml): WordPiece tokens, no unknown words, the cut to TEXT.WORDS_NUM, and the word
    attention of stage 1 (B_INIT_ATTENTION) as well as stage 2."""
    config = "cfg/shapes_bert_attn.yml"
    bert_attngan = {"GAN.B_INIT_ATTENTION": True, "GAN.UPSAMPLE": "bilinear", "TREE.BASE_SIZE": 32,
                    "GAN.GRID_ATTENTION": 0, "GAN.GRID_NOISE": False, "GAN.GRID_PLACE_FEATURES": False,
                    "GAN.GRID_HEADS": 0, "GAN.WORD_CONTEXT_LAYERS": 0}
    overrides = {**TINY_RUN, **bert_attngan, "TEXT.BERT_PATH": str(minilm_dir), "TEXT.WORDS_NUM": 6}
    data = load_config(f"{runs['attngan']}/{RUN_CONFIG}").DATA_DIR
    net_e = tiny_encoders(small_config(config, data, **overrides), tmp_path / "damsm")
    run = tiny_run(tmp_path, "attngan", data, net_e, config=config, **overrides)
    model = AppModel("bert", *run_config(run, None, {}), torch.device("cpu"))
    answer = App([model]).handle({"sentence": "a zebra circle on the left of a big square", "variants": 2})[1]
    assert answer["dropped"] == [] and "cut to the first 6" in answer["warnings"][0]
    assert answer["used"] == "a zebra circle on the left" and answer["words"][:2] == ["a", "zebra"]  # no unknowns
    groups = answer["variants"][0]["attention"]
    assert ["stage 1" in groups[0]["label"], "stage 2" in groups[1]["label"]] == [True, True]
    assert [len(g["maps"]) for g in groups] == [6, 6]
    assert _png(groups[0]["maps"][0]["png"]).size == (64, 64)  # 32-px stage shown at 64 px


def test_long_sentence_cut_to_words_num(app):
    words_num = app.models[0].words_num
    sentence = " ".join(["red"] * (words_num + 5))
    answer = _ok(app, model=0, sentence=sentence, variants=1, seed=0)
    assert len(answer["words"]) == words_num == len(answer["variants"][0]["attention"][0]["maps"])
    assert f"more than TEXT.WORDS_NUM={words_num}; cut to the first {words_num}" in answer["warnings"][0]


@pytest.mark.parametrize("payload, message", [
    ({"sentence": "a" * 301}, "at most 300"),
    ({"sentence": "a red circle", "variants": 0}, "variants must be a whole number from 1 to 6"),
    ({"sentence": "a red circle", "variants": 7}, "from 1 to 6"),
    ({"sentence": "a red circle", "variants": "3"}, "variants"),
    ({"sentence": "a red circle", "variants": True}, "variants"),
    ({"sentence": "a red circle", "seed": -1}, "seed"),
    ({"sentence": "a red circle", "truncation": 0}, "truncation"),
    ({"sentence": "a red circle", "truncation": 3.0}, "truncation"),
    ({"sentence": "a red circle", "model": 3}, "model must be a whole number from 0 to 2"),
    ({"sentence": "a red circle", "TRAIN.NET_G": "/etc/passwd"}, "unknown request fields ['TRAIN.NET_G']"),
    ({"sentence": None}, "sentence must be text"),
])
def test_limits(app, payload, message):
    status, answer = app.handle(payload)
    assert status == 400 and message in answer["error"]


def test_requests_are_queued_and_models_loaded_once(app, monkeypatch):
    """Concurrent requests run one at a time, and none of them reads a file."""
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a request loaded a file"))
    model = app.models[2]
    active, overlap = [0], []
    original = model.generate

    def counting(**kwargs):
        active[0] += 1
        overlap.append(active[0])
        time.sleep(0.05)
        try:
            return original(**kwargs)
        finally:
            active[0] -= 1

    monkeypatch.setattr(model, "generate", counting)
    results = []
    threads = [threading.Thread(target=lambda: results.append(app.handle({"model": 2, "sentence": "a red circle",
                                                                           "variants": 1})[0])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 4 and max(overlap) == 1


def test_server_api_and_safety(app):
    server = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def request(path, body=None, headers=None):
        req = urllib.request.Request(base + path, data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    try:
        status, headers, page = request("/")
        assert status == 200 and b'id="sentence"' in page and "default-src 'self'" in headers["Content-Security-Policy"]
        assert request("/app.js")[0] == 200 and request("/app.css")[0] == 200
        assert request("/../tools/app.py")[0] == 404 and request("/config.yml")[0] == 404
        info = json.loads(request("/api/info")[2])
        assert [m["family"] for m in info["models"]] == ["AttnGAN", "SSA-GAN", "GAN-INT-CLS"]
        assert info["models"][0]["examples"] and info["max_variants"] == 6
        body = json.dumps({"model": 0, "sentence": "a red circle", "variants": 2, "seed": 3}).encode()
        status, _, answer = request("/api/generate", body, {"Content-Type": "application/json"})
        assert status == 200 and len(json.loads(answer)["variants"]) == 2
        assert request("/api/generate", body, {"Content-Type": "text/plain"})[0] == 415
        assert request("/api/generate", b"{", {"Content-Type": "application/json"})[0] == 400
        big = json.dumps({"sentence": "a" * 20000}).encode()
        assert request("/api/generate", big, {"Content-Type": "application/json"})[0] == 413
        assert request("/api/info", headers={"Host": "evil.example:80"})[0] == 403  # DNS rebinding
    finally:
        server.shutdown()
        server.server_close()


def test_run_folder_config_generator_and_errors(runs, tmp_path):
    cfg, net_g = run_config(runs["ssagan"], None, {"GPU_ID": -1})
    assert cfg.MODEL == "ssagan" and net_g.endswith("netG_001.pth")
    bare = tmp_path / "old_run"
    (bare / "Model").mkdir(parents=True)
    (bare / "Model" / "netG_epoch_3.pth").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="config.yml not found.*--cfg FILE"):
        run_config(str(bare), None, {})
    cfg, net_g = run_config(str(bare), RUN_CONFIGS["attngan"], {})  # an older run folder with the config given
    assert cfg.CONFIG_NAME == "attn" and net_g.endswith("netG_epoch_3.pth")
    with pytest.raises(FileNotFoundError, match="not a run folder of main.py"):
        run_config(str(tmp_path), RUN_CONFIGS["attngan"], {})
    (tmp_path / "Model").mkdir()
    with pytest.raises(FileNotFoundError, match="no netG_epoch"):
        run_config(str(tmp_path), RUN_CONFIGS["attngan"], {})


def test_main_writes_the_run_config_that_the_app_reads(runs, tmp_path):
    """A real 1-step AttnGAN training: its run folder serves as it is."""
    cfg = load_config(f"{runs['attngan']}/{RUN_CONFIG}")
    out = tmp_path / "run"
    tiny = {**TINY_RUN, "TRAIN.BATCH_SIZE": 4, "TRAIN.MAX_STEPS": 1, "WORKERS": 0}
    args = ["--cfg", RUN_CONFIGS["attngan"], "--gpu", "-1", "--output_dir", str(out), "--set",
            f"DATA_DIR={cfg.DATA_DIR}", f"TRAIN.NET_E={cfg.TRAIN.NET_E}"] + [f"{k}={v}" for k, v in tiny.items()]
    assert main_entry(args) == 0
    saved, net_g = run_config(str(out), None, {})
    assert saved.TRAIN.MAX_STEPS == 1 and saved.GAN.GF_DIM == 4 and net_g.endswith("netG_epoch_1.pth")
    model = AppModel("run", saved, net_g, torch.device("cpu"))
    assert len(model.generate("a red circle", 2, 0, None)["variants"]) == 2


def test_demo_sized_model_answers_8_variants_within_2_seconds(tmp_path):
    """cfg/shapes_attn.yml's own sizes (the demo model's compute; untrained weights), through HTTP on one thread:
    8 variants with their maps, scores and grid in under 2 s (best of three, on a shared CPU)."""
    data = tiny_shapes(tmp_path / "data")
    cfg = small_config(RUN_CONFIGS["attngan"], data, GPU_ID=-1)
    shipped = {f"{section}.{key}": cfg[section][key] for section, key in
               (("TEXT", "EMBEDDING_DIM"), ("DAMSM", "IMAGE_SIZE"), ("GAN", "GF_DIM"), ("GAN", "DF_DIM"))}
    run = tiny_run(tmp_path, "attngan", data, tiny_encoders(cfg, tmp_path / "damsm"), **shipped)
    saved, net_g = run_config(run, None, {})
    assert (saved.GAN.GF_DIM, saved.TEXT.EMBEDDING_DIM, saved.TREE.BRANCH_NUM) == (16, 128, 2)
    server = make_server(App([AppModel("demo", saved, net_g, torch.device("cpu"))]), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    body = json.dumps({"model": 0, "sentence": "a red circle in the top left corner on a white background",
                       "variants": 8, "seed": 0}).encode()
    times = []
    try:
        for _ in range(3):
            req = urllib.request.Request(f"http://127.0.0.1:{server.server_address[1]}/api/generate", data=body,
                                         headers={"Content-Type": "application/json"})
            start = time.perf_counter()
            with urllib.request.urlopen(req, timeout=60) as r:
                answer = json.loads(r.read())
            times.append(time.perf_counter() - start)
            assert len(answer["variants"]) == 8 and len(answer["variants"][0]["attention"][0]["maps"]) == 12
    finally:
        server.shutdown()
        server.server_close()
    assert min(times) < 2.0, times
