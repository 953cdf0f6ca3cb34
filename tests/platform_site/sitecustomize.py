"""Every Python process started with ``EIC_SIM_PLATFORM`` set (and this directory and the repository on
PYTHONPATH) runs under that simulated platform from its first line: the ProxyCommand, and the helper it
starts with ``python -m eic_proxy.helper.server``, and the processes that helper forks."""
import os

if os.environ.get("EIC_SIM_PLATFORM"):
    import tests.platform_sim

    tests.platform_sim.enter(os.environ["EIC_SIM_PLATFORM"])
