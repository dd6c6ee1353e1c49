#!/usr/bin/env python3
"""Reference test: can-train launched by PyTorch's own launcher, torchrun, as users launch it.

  * one machine: `torchrun --no-python --nproc-per-node 2 can-train ...` (torchrun's
    agent serves the store: TORCHELASTIC_USE_AGENT_STORE=True, every rank a client);
  * two machines, emulated on localhost: two torchrun agents, `--nnodes 2 --node-rank
    0|1 --nproc-per-node 1` meeting through c10d rendezvous at one endpoint, with
    distributed.shard_optimizer (ZeRO stage 1);
each on the tiny MoCAN config with half of each trainer's micro-batch per rank, against
one process with the whole micro-batch (the same global batches). Checked: the job
exits 0, its offline samples are the same text as the single process's, λ* within
1e-4 relative (the models differ by float summation order, about 1e-6), and rank 0
alone wrote the log.

Exit 0: all pass; 1: a failure (each named); 77: torch missing (outside CI).
The build folder comes from CAN_BINARY_DIR (CTest sets it), default build/.
"""
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
from can_reference import CheckFailure, Checks, program, read_json, require, run, temporary_folder  # noqa: E402

require("torch")

HALF_MICRO_BATCHES = ["--set", "sft.micro_batch_size=16", "--set", "reward_model.micro_batch_size=16",
                      "--set", "cost_model.micro_batch_size=16", "--set", "dpo.micro_batch_size=8"]


def can_train(run_dir, *settings):
    config = os.path.join(os.environ.get("CAN_SOURCE_DIR", "."), "configs", "tiny-mocan.yaml")
    return [program("can-train"), "--config", config, "--set", f"run.dir={run_dir}", "--set", "run.threads=1",
            *settings]


def torchrun(*options):
    return [sys.executable, "-m", "torch.distributed.run", *options]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def text(path):
    with open(path) as source:
        return source.read()


def compare(checks, name, job, single):
    checks.equal(f"{name}: the offline samples are the single process's",
                 text(os.path.join(job, "offline_scores", "responses.jsonl")),
                 text(os.path.join(single, "offline_scores", "responses.jsonl")))
    expected = read_json(os.path.join(single, "dual", "dual.json"))["lambda"]
    checks.close(f"{name}: λ*", read_json(os.path.join(job, "dual", "dual.json"))["lambda"], expected, atol=0,
                 rtol=1e-4, why="float summation order in training, about 1e-6 in the models")
    log = text(os.path.join(job, "can-train.log"))
    checks.equal(f"{name}: rank 0 alone wrote the log, saying it is a job of 2",
                 ("[rank 0]" in log, "[rank 1]" in log, "a job of 2 processes" in log), (True, False, True))


def main():
    start = time.monotonic()
    checks = Checks("torchrun_job")
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    with temporary_folder("torchrun_job") as root:
        try:
            single = os.path.join(root, "single")
            subprocess.run(can_train(single), check=True, capture_output=True, env=environment)

            one_machine = os.path.join(root, "one_machine")
            result = subprocess.run(torchrun("--no-python", "--nproc-per-node", "2", "--master-port",
                                             str(free_port()), *can_train(one_machine, *HALF_MICRO_BATCHES)),
                                    capture_output=True, text=True, env=environment)
            if checks.equal("torchrun --nproc-per-node 2: exit status 0", result.returncode, 0):
                compare(checks, "one machine", one_machine, single)
            else:
                print(result.stderr[-4000:])

            two_machines = os.path.join(root, "two_machines")
            endpoint = f"127.0.0.1:{free_port()}"
            agents = [subprocess.Popen(torchrun("--no-python", "--nnodes", "2", "--node-rank", str(node),
                                                "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                                                "--rdzv-endpoint", endpoint, "--rdzv-id", "can-test",
                                                *can_train(two_machines, *HALF_MICRO_BATCHES, "--set",
                                                           "distributed.shard_optimizer=true")),
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
                      for node in (0, 1)]
            outputs = [agent.communicate(timeout=600)[0] for agent in agents]
            if checks.equal("torchrun --nnodes 2 (two agents, c10d rendezvous, sharded optimizer): both exit 0",
                            [agent.returncode for agent in agents], [0, 0]):
                compare(checks, "two machines", two_machines, single)
            else:
                print("\n".join(output[-3000:] for output in outputs))
        except (CheckFailure, subprocess.CalledProcessError, subprocess.TimeoutExpired) as failure:
            checks.check("the programs run", False, str(failure))
    print(f"torchrun_job: {time.monotonic() - start:.0f} s")
    return checks.report()


if __name__ == "__main__":
    sys.exit(main())
