"""Camera files are confined to `cameras_file_roots` (issue 14): resolved first (symlinks, `..`), refused outside
every root in the config (naming cameras.N.url and the roots) and through the API (403 naming the roots)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from offline.config import ConfigError
from streaming.config import ServiceConfig, camera_file_path, load_service_config, parse_service_config, resolve_paths

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "config.yaml"


@pytest.fixture
def tree(tmp_path):
    """root/clip.mp4, root/sub/deep.mp4, root/link.mp4 -> outside/secret.mp4, root/inlink.mp4 -> root/clip.mp4."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    for f in (root / "clip.mp4", root / "sub" / "deep.mp4", outside / "secret.mp4"):
        f.write_bytes(b"\0")
    (root / "link.mp4").symlink_to(outside / "secret.mp4")
    (root / "inlink.mp4").symlink_to(root / "clip.mp4")
    return root, outside


@pytest.mark.parametrize(
    ("url", "path"),
    [("/a/b.mp4", "/a/b.mp4"), ("file:///a/b%20c.mp4", "/a/b c.mp4"), ("file://host/a/b.mp4", "/a/b.mp4"),
     ("clips/x.mp4", "clips/x.mp4"), ("rtsp://h/x", None), ("rtsps://h/x", None), ("demo://street?seed=0", None)],
)
def test_camera_file_path_reads_urls_as_the_decoder_does(url, path):
    assert camera_file_path(url) == (None if path is None else Path(path))


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("/etc/passwd", None),
        ("file:///etc/passwd", "resolves to /etc/passwd"),
        ("{root}/link.mp4", "resolves to {outside}/secret.mp4"),  # a symlink inside pointing outside
        ("{root}/../outside/secret.mp4", "resolves to {outside}/secret.mp4"),  # `..` escape
        ("{root}/sub/../../outside/secret.mp4", "resolves to {outside}/secret.mp4"),
        ("{root}x/clip.mp4", None),  # a sibling whose name starts like the root is not inside it
    ],
)
def test_files_outside_the_roots_are_refused_naming_them(tree, url, why):
    root, outside = tree
    cfg = ServiceConfig(cameras_file_roots=[root])
    url = url.format(root=root, outside=outside)
    with pytest.raises(PermissionError) as err:
        cfg.confine_camera(url)
    msg = str(err.value)
    assert msg.startswith(url) and f"(cameras_file_roots: ['{root}'])" in msg, msg
    assert why is None or why.format(outside=outside) in msg, msg


@pytest.mark.parametrize(
    ("url", "real"),
    [("{root}/clip.mp4", "clip.mp4"), ("file://{root}/sub/deep.mp4", "sub/deep.mp4"),
     ("{root}/inlink.mp4", "clip.mp4"), ("{root}/sub/../clip.mp4", "clip.mp4"), ("{root}/not-yet.mp4", "not-yet.mp4")],
)
def test_files_inside_a_root_are_accepted_as_their_real_path(tree, url, real):
    root, _ = tree
    cfg = ServiceConfig(cameras_file_roots=[Path("/nonexistent"), root])
    assert cfg.confine_camera(url.format(root=root)) == root / real


def test_a_symlinked_root_and_relative_paths_resolve_before_the_check(tree, tmp_path, monkeypatch):
    root, _ = tree
    (tmp_path / "alias").symlink_to(root)
    assert ServiceConfig(cameras_file_roots=[tmp_path / "alias"]).confine_camera(f"{root}/clip.mp4") == root / "clip.mp4"
    monkeypatch.chdir(root / "sub")
    cfg = ServiceConfig(cameras_file_roots=[root])
    assert cfg.confine_camera("deep.mp4") == root / "sub" / "deep.mp4"
    with pytest.raises(PermissionError, match="resolves to"):
        cfg.confine_camera("../../outside/secret.mp4")


@pytest.mark.parametrize("url", ["rtsp://u:p@10.0.0.9/live", "rtsps://10.0.0.9:322/x", "demo://street?seed=0"])
def test_streams_are_not_files_and_are_unaffected(url):
    assert ServiceConfig(cameras_file_roots=[]).confine_camera(url) is None
    assert ServiceConfig(cameras=[{"name": "a", "url": url}], cameras_file_roots=[]).cameras[0].url == url


def test_default_roots_are_the_config_file_cameras_directories(tree, tmp_path):
    root, outside = tree
    assert ServiceConfig().camera_file_roots() == []  # no file camera in the config: no file camera at all
    with pytest.raises(PermissionError, match=r"cameras_file_roots: \[\]"):
        ServiceConfig().confine_camera(str(root / "clip.mp4"))
    cfg = ServiceConfig(cameras=[{"name": "a", "url": f"file://{root}/clip.mp4"}, {"name": "d", "url": "demo://x"}])
    assert cfg.camera_file_roots() == [root]
    assert cfg.confine_camera(str(root / "sub" / "deep.mp4")) == root / "sub" / "deep.mp4"
    for bad in ("/etc/passwd", str(root / "link.mp4")):
        with pytest.raises(PermissionError):
            cfg.confine_camera(bad)
    # a config camera that is a symlink runs: its target's directory is a root as well
    cfg = ServiceConfig(cameras=[{"name": "l", "url": str(root / "link.mp4")}])
    assert cfg.camera_file_roots() == [root, outside]
    # resolve_paths freezes the defaults; explicit relative roots are taken against the base like bundle_roots
    assert resolve_paths(cfg, tmp_path).cameras_file_roots == [root, outside]
    assert resolve_paths(ServiceConfig(cameras_file_roots=["clips", "/abs"]), tmp_path).cameras_file_roots == [
        tmp_path / "clips", Path("/abs")]
    assert resolve_paths(ServiceConfig(), tmp_path).cameras_file_roots == []


def test_config_file_with_a_camera_outside_the_roots_names_the_field_and_roots(tree, tmp_path):
    root, outside = tree
    data = yaml.safe_load(DEPLOY.read_text())
    args = data["applications"][0]["args"]
    args["cameras_file_roots"] = [str(root)]
    args["cameras"] += [{"name": "ok", "url": str(root / "clip.mp4")}, {"name": "evil", "url": "/etc/passwd"},
                        {"name": "sneaky", "url": str(root / "link.mp4")}]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_service_config(path)
    msg = str(err.value)
    assert "2 invalid field(s)" in msg, msg
    assert f"  applications.0.args.cameras.2.url: /etc/passwd is outside the allowed camera file directories " \
           f"(cameras_file_roots: ['{root}'])" in msg, msg
    assert f"  applications.0.args.cameras.3.url: {root}/link.mp4 (resolves to {outside}/secret.mp4)" in msg, msg
    assert "cameras.1." not in msg  # the file inside the root is fine

    args["cameras"] = args["cameras"][:2]
    path.write_text(yaml.safe_dump(data))
    assert [c.name for c in load_service_config(path).cameras] == ["demo", "ok"]
    with pytest.raises(ConfigError, match=r"  cameras\.0\.url: .*cameras_file_roots: \[\]"):
        parse_service_config({"cameras": [{"name": "a", "url": str(root / "clip.mp4")}], "cameras_file_roots": []})


# ------------------------------------------------------------------------------------------- service
@pytest.mark.slow
def test_api_refuses_camera_files_outside_the_roots_with_403(tree, tmp_path):
    import requests
    from ray import serve

    from streaming.app import build_app
    from streaming.demo_feed import write_demo_video
    from tests.streaming.service_support import SERVE_PORT, demo_bundle, ensure_ray, wait_for

    root, outside = tree
    clip = root / "sub" / "real.mp4"
    write_demo_video(clip, 4.0, fps=10, size=64, seed=1, anomaly_every_s=None)
    ensure_ray()
    args = {
        "cameras_file_roots": [str(root)],
        "scorer": {"bundle": str(demo_bundle(tmp_path)), "build_demo_bundle": False, "num_cpus": 0.25},
        "events": {"path": str(tmp_path / "events.db")},
        "state": {"persist": False},
        "http": {"port": SERVE_PORT},
        "namespace": "vadroots",
    }
    serve.run(build_app(args), name="vadroots", route_prefix="/roots")
    base = f"http://127.0.0.1:{SERVE_PORT}/roots"
    try:
        def post(name: str, url: str) -> requests.Response:
            return requests.post(f"{base}/cameras", json={"name": name, "url": url, "fps": 5}, timeout=60)

        for i, url in enumerate(["/etc/passwd", "file:///etc/passwd", str(root / "link.mp4"),
                                 f"{root}/../outside/secret.mp4"]):
            r = post(f"bad{i}", url)
            assert r.status_code == 403, (url, r.text)
            detail = r.json()["detail"]
            assert detail.startswith("body.url: ") and f"cameras_file_roots: ['{root}']" in detail, detail
        assert requests.get(f"{base}/cameras", timeout=30).json() == []  # nothing was started

        assert post("clip", f"file://{root}/sub/../sub/real.mp4").status_code == 201
        assert post("street", "demo://s?seed=2&size=64&anomaly_every_s=0").status_code == 201
        assert post("door", "rtsp://127.0.0.1:9/none").status_code == 201  # not a file: accepted (and reconnecting)
        row = wait_for(lambda: (s := requests.get(f"{base}/cameras/clip", timeout=30).json())["frames_decoded"] > 0
                       and s, 60, "frames from the file inside the root")
        assert row["config"]["url"] == f"file://{root}/sub/../sub/real.mp4"  # shown as given, opened resolved

        # replacing or patching a running camera onto a file outside is refused and leaves it running as it was
        r = requests.put(f"{base}/cameras/clip", json={"name": "clip", "url": "/etc/passwd"}, timeout=60)
        assert r.status_code == 403 and str(root) in r.json()["detail"], r.text
        r = requests.patch(f"{base}/cameras/street", json={"url": str(root / "link.mp4")}, timeout=60)
        assert r.status_code == 403 and "resolves to" in r.json()["detail"], r.text
        cams = {c["name"]: c for c in requests.get(f"{base}/cameras", timeout=30).json()}
        assert sorted(cams) == ["clip", "door", "street"] and cams["street"]["url"].startswith("demo://")
    finally:
        serve.delete("vadroots")
