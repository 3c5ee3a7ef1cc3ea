"""upstream/: the patch series to OpenRLHF applies to the installed 0.11.2 wheel's files and passes its checks."""

import os
import shutil
import subprocess
import sys

import pytest

from openrlhf_drirl import plugin

CHECK = os.path.join(os.path.dirname(__file__), "..", "upstream", "check.sh")


def test_installed_openrlhf_has_no_registry_so_the_plugin_replaces_the_maker():
    # The registry path is tested on the patched tree by upstream/test_patched_openrlhf.py (run by check.sh).
    import openrlhf.trainer.ppo_trainer as ppo_trainer

    from openrlhf_drirl.advantage.experience_maker import DRIRLExperienceMaker

    assert plugin.openrlhf_estimator_registry() is None
    plugin.register()
    assert ppo_trainer.RemoteExperienceMaker is DRIRLExperienceMaker


@pytest.mark.skipif(shutil.which("git") is None, reason="check.sh builds a git tree")
def test_series_applies_and_passes_on_the_wheel_tree():
    result = subprocess.run(["bash", CHECK, sys.executable], capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert output.count("applied: ") == 2
    assert " passed" in output and " failed" not in output and " error" not in output
