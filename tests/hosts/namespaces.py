"""A "host" on this machine: its own network, PID, mount and UTS namespaces.

`NamespaceHost.create()` starts a holder (`unshare --net --uts --pid --fork
--mount-proc sleep infinity`): the `sleep` is the namespace's pid 1, and the
namespaces live as long as it does. The host gets its own hostname, and a
veth pair whose outer end stays here (the first address of a private /30)
and whose inner end is moved into the namespace (the second address), so
the host reaches a PostgreSQL listening on the outer address and nothing
else. Processes are started in it with `nsenter`, so they see only the
host's own processes (and /proc). Killing pid 1 kills every process of the
namespace at once (the kernel does it), which is how a host "dies".

Everything is argv lists, no shell. Needs root, util-linux (`unshare`,
`nsenter`) and iproute2 (`ip`).
"""

import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

import psutil

TOOLS = ("unshare", "nsenter", "ip", "hostname", "sleep")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 under 10.200.0.0/16 that no interface of this machine uses (for three /30s)."""
    used = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=30
    ).stdout
    start = os.getpid() % 250
    for offset in range(250):
        octet = (start + offset) % 250 + 1
        if f" 10.200.{octet}." not in used:
            return ipaddress.IPv4Network(f"10.200.{octet}.0/24")
    raise RuntimeError("no free 10.200.x.0/24 for the test hosts")


def pid_namespace(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def namespace_pids(pid: int) -> list[int]:
    """NSpid of a process: its pid in each PID namespace, outermost first."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(part) for part in line.split()[1:]]
    return [pid]


class NamespaceHost:
    def __init__(self, name: str, index: int, subnet: ipaddress.IPv4Network, tag: str):
        self.name = name
        block = list(subnet.subnets(new_prefix=30))[index]
        self.network = block
        self.outer_address, self.inner_address = (str(a) for a in block.hosts())
        # Interface names are at most 15 characters; the tag keeps them unique.
        self.outer_link = f"tr{tag}h{index}o"
        self.inner_link = f"tr{tag}h{index}i"
        self.holder: subprocess.Popen | None = None
        self.init_pid = 0  # the namespace's pid 1, as seen from here

    def create(self) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--uts", "--pid", "--fork", "--mount-proc", "--kill-child",
             "sleep", "infinity"],
        )  # fmt: skip
        self.init_pid = self._wait_for_init()
        self.enter_run("hostname", self.name)
        _run("ip", "link", "add", self.outer_link, "type", "veth", "peer", "name", self.inner_link)
        _run("ip", "addr", "add", f"{self.outer_address}/30", "dev", self.outer_link)
        _run("ip", "link", "set", self.outer_link, "up")
        _run("ip", "link", "set", self.inner_link, "netns", str(self.init_pid))
        self.enter_run("ip", "addr", "add", f"{self.inner_address}/30", "dev", self.inner_link)
        self.enter_run("ip", "link", "set", self.inner_link, "up")
        self.enter_run("ip", "link", "set", "lo", "up")

    def _wait_for_init(self) -> int:
        assert self.holder is not None
        holder = psutil.Process(self.holder.pid)
        for _ in range(500):  # bounded: 5 s
            children = holder.children()
            if children and namespace_pids(children[0].pid)[-1] == 1:
                return children[0].pid
            if self.holder.poll() is not None:
                raise RuntimeError(f"unshare exited with {self.holder.returncode}")
            psutil.wait_procs([], timeout=0.01)
        raise RuntimeError("the namespace's pid 1 did not appear")

    def enter_argv(self, *argv: str, cwd: str = "/") -> list[str]:
        """`argv` run inside every namespace of this host, in `cwd`."""
        return [
            "nsenter", "--target", str(self.init_pid),
            "--net", "--uts", "--pid", "--mount", f"--wd={cwd}", "--", *argv,
        ]  # fmt: skip

    def enter_run(self, *argv: str) -> None:
        _run(*self.enter_argv(*argv))

    def alive(self) -> bool:
        return self.holder is not None and self.holder.poll() is None

    def processes(self) -> list[psutil.Process]:
        """Every process of this host, seen from the root namespace."""
        if not self.init_pid:
            return []
        mine = pid_namespace(self.init_pid)
        found = []
        for proc in psutil.process_iter():
            try:
                if pid_namespace(proc.pid) == mine:
                    found.append(proc)
            except OSError:
                continue
        return found

    def process_of(self, inner_pid: int) -> psutil.Process | None:
        """The process whose pid inside this host is `inner_pid`."""
        for proc in self.processes():
            try:
                if namespace_pids(proc.pid)[-1] == inner_pid:
                    return proc
            except OSError:
                continue
        return None

    def kill(self) -> None:
        """The host dies at once: SIGKILL to its pid 1 takes every process with it."""
        if self.init_pid and psutil.pid_exists(self.init_pid):
            inits = [psutil.Process(self.init_pid)]
            members = self.processes()
            for proc in inits:
                proc.kill()
            psutil.wait_procs(members, timeout=10)
        if self.holder is not None:
            self.holder.wait(timeout=10)

    def destroy(self) -> None:
        try:
            self.kill()
        finally:
            # The inner end went with the namespace; the outer end is deleted
            # with it, but say so explicitly when it is still there.
            subprocess.run(["ip", "link", "del", self.outer_link], capture_output=True, timeout=30)
