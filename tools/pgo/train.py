"""Make the profile that optimises the extension (profile-guided optimisation, PGO).

    python tools/pgo/train.py

Builds the extension instrumented (in target/pgo-gen), runs the work it exists for
with that build (the emulator's side of the benchmark suite, then more decode steps of
the bundled model), and merges what the run counted into tools/pgo/lpu.profdata,
beside the toolchain it was made with (tools/pgo/toolchain.txt) and a digest of the
crates' manifests and build scripts (tools/pgo/manifests.sha256). `pip install .` then builds with it (see
tools/pgo/pgo_backend.py and docs/performance.md). Needs `llvm-profdata` from the
toolchain: `rustup component add llvm-tools`.

Run it again after changing the Rust code: a function changed since the profile was
made is built without it (rustc warns), the rest of the profile still applies.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pgo_backend import MANIFESTS, PROFILE, ROOT, TOOLCHAIN, manifests_digest, rustc_version  # noqa: E402

#: Decode steps run after the benchmark suite, so that the engine's bookkeeping (most of
#: a decode step) weighs in the profile beside the streaming kernels' loops.
DECODE_STEPS = 256

DECODE = f"""
from lpu.llm import load_bundled
from lpu.llm.onchip import ChipModel
model = load_bundled()
chip_model = ChipModel(model)
for i in range({DECODE_STEPS}):
    if i % 32 == 0:
        chip_model.reset()
    chip_model.step(i % model.config.vocab_size)
"""


def llvm_profdata() -> str:
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], check=True, capture_output=True,
                             text=True).stdout.strip()
    host = next(line.split(": ")[1] for line in rustc_version().splitlines() if line.startswith("host: "))
    tool = os.path.join(sysroot, "lib", "rustlib", host, "bin", "llvm-profdata")
    if not os.path.exists(tool):
        sys.exit(f"{tool} is missing: run `rustup component add llvm-tools`")
    return tool


def main() -> int:
    tool = llvm_profdata()
    target = os.path.join(ROOT, "target", "pgo-gen")
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw")
        env = {**os.environ, "CARGO_TARGET_DIR": target,
               "CARGO_ENCODED_RUSTFLAGS": f"-Cprofile-generate={raw}"}
        env.pop("RUSTFLAGS", None)
        subprocess.run(["cargo", "build", "--release", "-p", "lpu-py"], cwd=ROOT, env=env, check=True)
        # Build scripts ran instrumented too: only the extension's run counts.
        shutil.rmtree(raw, ignore_errors=True)
        pkg = os.path.join(tmp, "pkg")
        shutil.copytree(os.path.join(ROOT, "python", "lpu"), os.path.join(pkg, "lpu"),
                        ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
        shutil.copy(os.path.join(target, "release", "lib_core.so"),
                    os.path.join(pkg, "lpu", "_core" + sysconfig.get_config_var("EXT_SUFFIX")))
        run = {**os.environ, "PYTHONPATH": pkg}
        subprocess.run([sys.executable, "-m", "pytest", "benches", "-q", "-p", "no:cacheprovider", "-k", "lpu"],
                       cwd=ROOT, env=run, check=True)
        subprocess.run([sys.executable, "-c", DECODE], cwd=ROOT, env=run, check=True)
        subprocess.run([tool, "merge", "-o", PROFILE, *glob.glob(os.path.join(raw, "*.profraw"))], check=True)
    with open(TOOLCHAIN, "w") as f:
        f.write(rustc_version())
    with open(MANIFESTS, "w") as f:
        f.write(manifests_digest(ROOT) + "\n")
    print(f"wrote {os.path.relpath(PROFILE, ROOT)} ({os.path.getsize(PROFILE) // 1024} KB) for:")
    print(rustc_version().splitlines()[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
