"""Every output carries C2PA content credentials: signed inside the atomic write, read back offline,
tampering caught, no thumbnail and no file names inside, audio untouched."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealfuse.cli import main
from sealfuse.engine.api import swap_file
from sealfuse.engine.errors import OutputError
from sealfuse.engine.options import SwapOptions
from sealfuse.engine.provenance import (
    DIGITAL_SOURCE_TYPE,
    Claim,
    Provenance,
    ProvenanceConfig,
    Sealer,
    SigningKeyError,
    sha256_file,
)
from sealfuse.verifier.provenance import ABSENT, INVALID, TRUSTED, UNTRUSTED, read_credentials
from tests.video.clips import audio_digests, make_clip

pytest.importorskip("c2pa")


def _verify(path: Path, *args: str) -> tuple[int, dict]:
    res = CliRunner().invoke(main, ["provenance", "verify", str(path), "--json", *args])
    return res.exit_code, json.loads(res.stdout)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp"])
def test_an_image_swap_is_signed_and_reads_back_trusted(ext, private_names, cpu, signing, pki, tmp_path):
    out = tmp_path / f"result{ext}"
    report = swap_file(private_names.source, private_names.target, out, cpu, provenance=signing, job_id="job-42")
    prov = report["provenance"]
    assert prov["signed"] and prov["manifest_id"].startswith("urn:c2pa:")
    assert prov["output_sha256"] == sha256_file(out), "the recorded digest is the file that appeared"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", out.name], "no temp file may remain"

    creds = read_credentials(out, pki.ca)
    assert creds.state == TRUSTED, creds.failures
    assert creds.manifest_id == prov["manifest_id"]
    assert creds.action == "c2pa.edited" and creds.digital_source_type == DIGITAL_SOURCE_TYPE
    assert creds.software_agent.startswith("sealfuse ") and creds.claim_generator.startswith("sealfuse ")
    assert creds.job_id == "job-42"
    names = {m["name"] for m in creds.models}
    assert {"blazeface_full_range", "blazeface_short_range", "facemesh_468"} <= names
    assert all(len(m["sha256"]) == 64 and "/" not in m["file"] for m in creds.models)
    assert creds.options["face_swapper_model"] == "auto" and creds.options["blend_ratio"] == 1.0
    assert creds.options["face_mask_padding"] == {"top": 0, "right": 0, "bottom": 0, "left": 0}


def test_nothing_private_is_inside_the_manifest(private_names, cpu, signing, tmp_path):
    """No source/target file names, no thumbnail or other embedded image, no local paths."""
    out = tmp_path / "result.png"
    swap_file(private_names.source, private_names.target, out, cpu, provenance=signing)
    import c2pa

    with c2pa.Reader(str(out)) as r:
        store = r.json() + r.detailed_json()
    data = out.read_bytes()
    for needle in ("alice-private-source", "bob-confidential-target", str(tmp_path), str(cpu.models_dir)):
        assert needle not in store
        assert needle.encode() not in data and needle.encode("utf-16-le") not in data
    assert "thumbnail" not in store.lower()
    manifest = json.loads(r_json(out))
    active = manifest["manifests"][manifest["active_manifest"]]
    assert "resources" not in json.dumps(active)
    # the manifest store is the caBX chunk of the PNG: no JPEG/PNG/WebP signature may be inside it
    start = data.index(b"caBX")
    length = int.from_bytes(data[start - 4:start], "big")
    chunk = data[start + 4:start + 4 + length]
    assert 0 < length < 16_000
    for magic in (b"\xff\xd8\xff", b"\x89PNG", b"WEBPVP8"):
        assert magic not in chunk


def r_json(path: Path) -> str:
    import c2pa

    with c2pa.Reader(str(path)) as r:
        return r.json()


def test_one_flipped_byte_makes_the_output_invalid(private_names, cpu, signing, pki, tmp_path):
    out = tmp_path / "result.jpg"
    swap_file(private_names.source, private_names.target, out, cpu, provenance=signing)
    data = bytearray(out.read_bytes())
    data[-5000] ^= 0x01  # inside the entropy-coded image data, far from the manifest at the start
    bad = tmp_path / "tampered.jpg"
    bad.write_bytes(bytes(data))
    creds = read_credentials(bad, pki.ca)
    assert creds.state == INVALID
    assert any("mismatch" in f["code"] for f in creds.failures)
    code, out_json = _verify(bad, "--trust-anchors", str(pki.ca))
    assert code == 11 and out_json["state"] == "invalid" and out_json["reason"] == "invalid"


def test_another_studios_ca_or_none_gives_valid_untrusted(private_names, cpu, signing, other_ca, pki, tmp_path):
    out = tmp_path / "result.jpg"
    swap_file(private_names.source, private_names.target, out, cpu, provenance=signing)
    assert read_credentials(out, other_ca).state == UNTRUSTED
    assert read_credentials(out).state == UNTRUSTED
    code, res = _verify(out, "--trust-anchors", str(other_ca))
    assert code == 10 and res["state"] == UNTRUSTED and not res["ok"]
    code, res = _verify(out, "--trust-anchors", str(pki.ca))
    assert code == 0 and res["ok"] and res["job_id"] and res["action"] == "c2pa.edited"


def test_a_file_without_credentials_is_absent(t1_jpg, tmp_path):
    code, res = _verify(t1_jpg)
    assert code == 12 and res["state"] == ABSENT
    junk = tmp_path / "nothing.jpg"
    code, res = _verify(junk)
    assert code == 2 and res["reason"] == "unreadable"
    bad_anchor = tmp_path / "ca.pem"
    bad_anchor.write_text("not a certificate")
    code, res = _verify(t1_jpg, "--trust-anchors", str(bad_anchor))
    assert code == 2 and "not PEM" in res["message"]


def test_mp4_is_signed_and_its_audio_stays_bit_exact(pki, signing, cpu, hanks_png, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", frames=12)
    out = tmp_path / "result.mp4"
    report = swap_file(hanks_png, clip, out, cpu, provenance=signing, job_id="video-job")
    assert report["audio"] == "copied" and report["provenance"]["signed"]
    assert audio_digests(out) == audio_digests(clip), "audio packets are copied and signing keeps them"
    creds = read_credentials(out, pki.ca)
    assert creds.state == TRUSTED and creds.job_id == "video-job" and creds.options["detect_every"] == 3

    # signing alone (the step inside the atomic write) changes no audio or video packet
    unsigned = tmp_path / "unsigned.mp4"
    swap_file(hanks_png, clip, unsigned, cpu, provenance=Provenance())
    before = _packets(unsigned)
    Sealer.from_files(pki.key, pki.chain).seal(unsigned, "video/mp4", Claim("x", (), {}, "video"))
    assert _packets(unsigned) == before
    assert read_credentials(unsigned, pki.ca).state == TRUSTED


def _packets(path: Path) -> dict[str, list[bytes]]:
    import hashlib

    import av

    out: dict[str, list[bytes]] = {"audio": [], "video": []}
    with av.open(str(path)) as c:
        for p in c.demux():
            if p.size:
                out[p.stream.type].append(hashlib.sha256(bytes(p)).digest() + str(p.pts).encode())
    return out


def test_mkv_cannot_carry_a_manifest_unsigned_with_a_warning_or_refused_when_required(
        pki, signing, cpu, hanks_png, tmp_path):
    clip = make_clip(tmp_path / "clip.mkv", frames=6, audio=None)
    out = tmp_path / "result.mkv"
    lenient = Provenance(ProvenanceConfig(pki.key, pki.chain, require=False))
    report = swap_file(hanks_png, clip, out, cpu, provenance=lenient)
    assert not report["provenance"]["signed"] and report["provenance"]["output_sha256"] == sha256_file(out)
    assert any("cannot carry a C2PA manifest" in w for w in report["warnings"])
    out.unlink()
    with pytest.raises(Exception) as err:
        swap_file(hanks_png, clip, out, cpu, provenance=signing)
    assert getattr(err.value, "reason", "") == "unsignable_format" and getattr(err.value, "code", 0) == 9
    assert not out.exists()


def test_required_signing_without_a_key_fails_the_job_before_any_work(private_names, tmp_path, cpu):
    out = tmp_path / "result.jpg"
    res = CliRunner(env={"SEALFUSE_PROVENANCE_KEY": "", "SEALFUSE_PROVENANCE_CHAIN": ""}).invoke(main, [
        "swap", "-s", str(private_names.source), "-t", str(private_names.target), "-o", str(out),
        "--models-dir", str(cpu.models_dir), "--execution-providers", "cpu", "--require-signed", "--json"])
    report = json.loads(res.stdout)
    assert res.exit_code == 9 and report["reason"] == "unsigned_output_refused"
    assert not out.exists()


def test_without_a_key_the_output_says_it_is_unsigned(private_names, cpu, tmp_path):
    out = tmp_path / "result.jpg"
    report = swap_file(private_names.source, private_names.target, out, cpu, provenance=Provenance())
    assert report["provenance"] == {"signed": False, "manifest_id": None, "job_id": report["provenance"]["job_id"],
                                    "unsigned_reason": "no signing key configured",
                                    "output_sha256": sha256_file(out)}
    assert any("UNSIGNED" in w for w in report["warnings"])
    assert "UNSIGNED" in Provenance().status()["message"]


def test_a_key_that_is_not_the_certificates_is_refused(pki, other_ca, tmp_path):
    other_key = other_ca.parent / "appliance" / "signing.key"
    with pytest.raises(SigningKeyError, match="does not belong"):
        Provenance(ProvenanceConfig(other_key, pki.chain))
    with pytest.raises(SigningKeyError, match="cannot read"):
        Provenance(ProvenanceConfig(tmp_path / "missing.key", pki.chain))
    with pytest.raises(SigningKeyError, match="without its certificate chain"):
        Provenance(ProvenanceConfig(pki.key, None))


def test_the_cli_signs_with_the_given_key(private_names, pki, cpu, tmp_path):
    out = tmp_path / "cli.webp"
    res = CliRunner().invoke(main, [
        "swap", "-s", str(private_names.source), "-t", str(private_names.target), "-o", str(out),
        "--models-dir", str(cpu.models_dir), "--execution-providers", "cpu", "--json",
        "--provenance-key", str(pki.key), "--provenance-chain", str(pki.chain), "--job-id", "cli-1"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["provenance"]["signed"]
    code, v = _verify(out, "--trust-anchors", str(pki.ca))
    assert code == 0 and v["job_id"] == "cli-1"


def _unshare_works() -> bool:
    return shutil.which("unshare") is not None and \
        subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs root and unshare --net")
def test_signing_and_verifying_work_with_no_network(private_names, pki, cpu, tmp_path):
    out = tmp_path / "offline.jpg"
    swap = ["swap", "-s", str(private_names.source), "-t", str(private_names.target), "-o", str(out),
            "--models-dir", str(cpu.models_dir), "--execution-providers", "cpu", "--require-signed",
            "--provenance-key", str(pki.key), "--provenance-chain", str(pki.chain)]
    verify = ["provenance", "verify", str(out), "--trust-anchors", str(pki.ca), "--json"]
    script = ("import socket,sys\n"
              "s=socket.socket(); s.settimeout(2)\n"
              "try:\n s.connect(('1.1.1.1',443)); sys.exit('network reachable')\n"
              "except OSError: pass\n"
              "from sealfuse.cli import main\n"
              "import json; sys.argv=['sealfuse',*json.loads(sys.argv[1])]\n"
              "main()\n")
    for args in (swap, verify):
        res = subprocess.run(["unshare", "--net", sys.executable, "-c", script, json.dumps(args)],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["state"] == TRUSTED


def test_an_output_that_cannot_be_written_is_not_signed_or_left_behind(private_names, cpu, signing, tmp_path):
    with pytest.raises(OutputError):
        swap_file(private_names.source, private_names.target, tmp_path / "missing" / "o.jpg", cpu,
                  provenance=signing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]


def test_options_in_the_manifest_are_the_shaping_ones_only(tmp_path):
    opts = SwapOptions(models_dir=tmp_path / "secret-models", reference_face_image=tmp_path / "carol.png",
                       blend_ratio=0.7, face_map=((tmp_path / "dave-ref.png", tmp_path / "erin-src.png"),))
    claim = Claim.for_job("j", "image", [{"name": "m", "file": str(tmp_path / "m.onnx"), "sha256": "0" * 64}], opts)
    text = json.dumps(claim.options) + json.dumps(claim.models)
    assert "secret-models" not in text and "carol" not in text and str(tmp_path) not in text
    assert "dave" not in text and "erin" not in text and claim.options["face_map_pairs"] == 1
    assert claim.options["blend_ratio"] == 0.7 and claim.options["reference_face"] is True
    assert claim.models[0]["file"] == "m.onnx"


def test_signing_cost_is_reported(private_names, cpu, signing, tmp_path):
    report = swap_file(private_names.source, private_names.target, tmp_path / "o.jpg", cpu, provenance=signing)
    assert report["provenance"]["sign_ms"] > 0


def test_mov_is_signed_too(pki, signing, cpu, hanks_png, tmp_path):
    clip = make_clip(tmp_path / "clip.mov", frames=8)
    out = tmp_path / "result.mov"
    report = swap_file(hanks_png, clip, out, cpu, provenance=signing)
    assert report["provenance"]["format"] == "video/quicktime"
    assert read_credentials(out, pki.ca).state == TRUSTED
    assert audio_digests(out) == audio_digests(clip)
