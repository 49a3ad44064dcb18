#!/usr/bin/env bash
# Make a venv with the SLURM executor plugin, layered on an existing featreg
# venv, so that the main venv stays without the plugin.
#
#   scripts/slurm/make-venv.sh [MAIN_VENV] [SLURM_VENV]   (default .venv .venv-slurm)
#
# Why: with the plugin installed, every `snakemake` start runs
# `scontrol show config`, which costs ~9 s where SLURM's client is installed but
# no controller answers; that would slow every local workflow test. The new
# venv sees the main venv's packages through a .pth file, so only the plugin
# and its jobstep companion are installed (~2 s; no torch reinstall), and it
# gets `snakemake` and `featreg` commands that run with its own interpreter.
set -euo pipefail

main_venv=$(realpath "${1:-.venv}")
slurm_venv=$(realpath -m "${2:-.venv-slurm}")
readonly PLUGIN='snakemake-executor-plugin-slurm>=2.8,<3'

[[ -x $main_venv/bin/python ]] || { echo "make-venv: no python in $main_venv/bin" >&2; exit 1; }
main_site=$("$main_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

"$main_venv/bin/python" -m venv --without-pip "$slurm_venv"
slurm_site=$("$slurm_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# addsitedir (not a bare path) so the main venv's own .pth files, such as an
# editable featreg install, are processed too.
echo "import site; site.addsitedir('$main_site')" >"$slurm_site/featreg-main-venv.pth"
"$main_venv/bin/python" -m pip --python "$slurm_venv/bin/python" install --quiet "$PLUGIN"

# Console scripts bound to this venv's interpreter, so SLURM jobs (which run
# `python -m snakemake` with the submitting interpreter) also see the plugin.
write_entry_point() {
    local name=$1 module=$2 func=$3
    cat >"$slurm_venv/bin/$name" <<EOF
#!$slurm_venv/bin/python
import sys
from $module import $func
sys.exit($func())
EOF
    chmod +x "$slurm_venv/bin/$name"
}
write_entry_point snakemake snakemake.cli main
write_entry_point featreg featreg.cli main
