"""Package local_zohosync for Moodle's plugin installer.

Moodle's *Install plugins* page wants a zip whose single top-level folder is the plugin's directory
name (``zohosync``, installed as ``local/zohosync``). The repository keeps the plugin in
``moodle_plugin/local_zohosync``; this script zips it under ``zohosync/``, without its ``tests/``
(stubs of Moodle classes that must never reach a Moodle site). Entries are sorted and dated
2026-01-01, so the same sources always make the same zip.

Usage::

    python3 moodle_plugin/build_zip.py [OUTPUT]     # default: .local/local_zohosync.zip
"""

import sys
import zipfile
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent / "local_zohosync"
#: The plugin's directory name in Moodle (``local/zohosync``): the zip's top-level folder.
FOLDER = "zohosync"
#: Top-level folders of the plugin that are not shipped.
EXCLUDED = frozenset({"tests"})
DEFAULT_OUTPUT = Path(".local") / "local_zohosync.zip"
_DATE = (2026, 1, 1, 0, 0, 0)


def plugin_files(plugin: Path = PLUGIN) -> list[Path]:
    """The files that ship: everything under ``plugin`` but ``tests/`` and hidden files, sorted.

    Args:
        plugin: the plugin's folder.

    Returns:
        Absolute paths.
    """
    files = []
    for path in sorted(plugin.rglob("*")):
        parts = path.relative_to(plugin).parts
        if path.is_file() and parts[0] not in EXCLUDED and not any(p.startswith(".") for p in parts):
            files.append(path)
    return files


def build(output: Path, plugin: Path = PLUGIN) -> list[str]:
    """Write the installable zip.

    Args:
        output: the zip to write (its folder is created).
        plugin: the plugin's folder.

    Returns:
        The names written: folders (``zohosync/``, ``zohosync/classes/``, ...), then files
        (``zohosync/version.php``, ...).

    Raises:
        FileNotFoundError: ``plugin`` has no ``version.php``.
    """
    if not (plugin / "version.php").is_file():
        raise FileNotFoundError(f"{plugin} has no version.php: not a Moodle plugin folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    files = plugin_files(plugin)
    # Folder entries first, as `zip -r` writes them: installers that check the layout expect them.
    folders = {FOLDER + "/"}
    for path in files:
        for parent in path.relative_to(plugin).parents:
            if parent.parts:
                folders.add(f"{FOLDER}/{parent.as_posix()}/")
    names = []
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(folders):
            info = zipfile.ZipInfo(name, date_time=_DATE)
            info.external_attr = (0o40755 << 16) | 0x10
            archive.writestr(info, b"")
            names.append(name)
        for path in files:
            name = f"{FOLDER}/{path.relative_to(plugin).as_posix()}"
            info = zipfile.ZipInfo(name, date_time=_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            archive.writestr(info, path.read_bytes())
            names.append(name)
    return names


def main(argv: list[str]) -> int:
    """Build the zip named by ``argv[1]`` (or the default) and say where it is."""
    output = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUTPUT
    files = [name for name in build(output) if not name.endswith("/")]
    print(f"{output}: {len(files)} files under {FOLDER}/ (Site administration > Plugins > Install plugins)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
