"""The Merge page's download: one zip that loads elsewhere with open_clip alone, as its README says."""

import json
import subprocess
import sys
import textwrap
import zipfile

import torch

from engine.cli import main
from engine.io.checkpoints import load_checkpoint
from engine.runs.export import bundle_path, export_bundle


def test_the_bundle_loads_in_a_fresh_process_from_the_zip_alone(tiny_collection_dir, data_home, tmp_path):
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tiny_collection_dir)]}))
    assert main(["merge", "--collection", str(tiny_collection_dir), "--param", "lam=0.4", "--out", "m"]) == 0
    checkpoint = load_checkpoint(data_home / "exports" / "m.safetensors")
    bundle = export_bundle(checkpoint)
    assert bundle == bundle_path(checkpoint.path)
    with zipfile.ZipFile(bundle) as z:
        names = sorted(z.namelist())
        readme = z.read("README.txt").decode()
    assert names == ["README.txt", "m.json", "m.open_clip.json", "m.recipe.json", "m.safetensors"]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(images, elsewhere / "images.pt")
    loading = textwrap.dedent("\n".join(line for line in readme.splitlines() if line.startswith("    ")))
    script = (
        f"import zipfile, torch\nzipfile.ZipFile({str(bundle)!r}).extractall('.')\n{loading}\n"
        "size = model.visual.image_size[0]\n"
        "x = torch.nn.functional.interpolate(torch.load('images.pt'), size=(size, size))\n"
        "with torch.no_grad():\n    torch.save(model.visual.eval()(x), 'features.pt')\n"
    )
    # -I: no PYTHONPATH, no current folder on the path: only installed packages, never this repository's engine
    run = subprocess.run([sys.executable, "-I", "-c", script], cwd=elsewhere, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    theirs = torch.load(elsewhere / "features.pt", weights_only=True)

    import open_clip

    config = json.loads((data_home / "exports" / "m.open_clip.json").read_text())
    model = open_clip.create_model("ViT-B-32", pretrained=None, **config).eval()
    model.visual.load_state_dict(checkpoint.state)
    size = model.visual.image_size[0]
    with torch.no_grad():
        ours = model.visual(torch.nn.functional.interpolate(images, size=(size, size)))
    torch.testing.assert_close(theirs, ours)
    assert not torch.allclose(ours, torch.zeros_like(ours))
