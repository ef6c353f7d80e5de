"""blender_manifest.toml and the extension zip that `blender --command extension build` makes from it."""

import os
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = tomllib.loads((ROOT / "blender_manifest.toml").read_text())


def test_manifest_fields():
    """The rules Blender's extension tooling checks (bl_pkg/cli/blender_ext.py), restated."""
    assert MANIFEST["schema_version"] == "1.0.0"
    assert MANIFEST["id"] == "uvidm" and MANIFEST["id"].isidentifier()
    assert MANIFEST["type"] == "add-on"
    assert MANIFEST["blender_version_min"] == "4.2.0"
    assert MANIFEST["license"] == ["SPDX:GPL-3.0-or-later"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert MANIFEST["version"] == project["version"]  # one version for the add-on and its backend
    for text in (MANIFEST["tagline"], *MANIFEST["permissions"].values()):
        assert 0 < len(text) <= 64 and text == text.strip()
        assert text[-1].isalnum() or text[-1] in ")]}", f"{text!r} must not end with punctuation"
    assert set(MANIFEST["permissions"]) == {"files", "network"}
    assert MANIFEST["maintainer"] and MANIFEST["name"]


def _blender_cli():
    pytest.importorskip("bpy")
    from bl_pkg import bl_extension_cli  # Blender's own `blender --command extension` handler

    return bl_extension_cli.cli_extension_handler


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory) -> Path:
    cli = _blender_cli()
    out = tmp_path_factory.mktemp("dist")
    assert cli(["validate", str(ROOT)]) == 0
    assert cli(["build", "--source-dir", str(ROOT), "--output-dir", str(out)]) == 0
    (built,) = out.glob("*.zip")
    assert built.name == f"uvidm-{MANIFEST['version']}.zip"
    return built


def test_zip_holds_the_addon_and_the_backend_only(extension_zip):
    names = zipfile.ZipFile(extension_zip).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"__init__.py", "blender_manifest.toml", "pyproject.toml", "README.md", "uvidm_blender",
                    "uvidm_backend"}
    assert "uvidm_blender/operators.py" in names and "uvidm_backend/cli.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/." in f"/{n}"]
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "uvidm_blender").rglob("*.py")}
    assert source <= set(names)


def test_zip_installs_and_enables_in_a_fresh_blender(extension_zip, tmp_path):
    """Get Extensions > Install from Disk, as a script: in a separate Blender with empty user folders."""
    script = textwrap.dedent(f"""
        import sys
        import bpy
        result = bpy.ops.extensions.package_install_files(
            filepath={str(extension_zip)!r}, repo="user_default", enable_on_install=True)
        assert result == {{"FINISHED"}}, result
        name = "bl_ext.user_default.uvidm"
        assert name in bpy.context.preferences.addons, list(bpy.context.preferences.addons.keys())
        assert hasattr(bpy.types, "UVIDM_OT_generate") and hasattr(bpy.types, "VIEW3D_PT_uvidm")
        prefs = bpy.context.preferences.addons[name].preferences
        assert prefs.backend_mode == "LOCAL"
        backend = sys.modules[name + ".uvidm_blender.backend"]
        preferences = sys.modules[name + ".uvidm_blender.preferences"]
        staged = backend.stage_backend_source(backend.EXTENSION_ROOT, preferences.user_folder() / "backend-source")
        assert (staged / "pyproject.toml").is_file() and (staged / "uvidm_backend" / "cli.py").is_file()
        print("INSTALLED", backend.EXTENSION_ROOT, preferences.user_folder())
    """)
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender-user"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    installed = next(line for line in done.stdout.splitlines() if line.startswith("INSTALLED")).split()
    assert Path(installed[1]).parent.name == "user_default"  # the extension, not this checkout
    assert Path(installed[2]).is_dir()
