#!/usr/bin/env python3
"""A rota client in Python, generated from proto/ with grpcio-tools.

Proves the rota.v1 API is usable from another language: reflection lists the
services, health answers, jobs are written through every server (followers
forward to the leader) and read back, bad specs get INVALID_ARGUMENT naming
the field. Exits non-zero with a message on the first failure.

Usage: rota_client_check.py HOST:PORT [HOST:PORT ...]
"""

import glob
import os
import sys
import tempfile

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_tools import protoc

import importlib.resources

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")


def generate_stubs() -> str:
    out = tempfile.mkdtemp(prefix="rota-py-")
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    protos = sorted(glob.glob(os.path.join(ROOT, "rota", "v1", "*.proto")))
    args = ["protoc", f"-I{ROOT}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    if protoc.main(args) != 0:
        sys.exit("protoc failed to generate the Python stubs")
    sys.path.insert(0, out)
    return out


def check(condition: bool, message: str) -> None:
    if not condition:
        sys.exit(f"FAIL: {message}")


def main() -> None:
    servers = sys.argv[1:]
    check(bool(servers), "usage: rota_client_check.py HOST:PORT [HOST:PORT ...]")
    generate_stubs()
    from rota.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2, job_pb2, job_pb2_grpc  # noqa: E402

    channels = [grpc.insecure_channel(s) for s in servers]

    # Reflection lists the services.
    reflection = reflection_pb2_grpc.ServerReflectionStub(channels[0])
    responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    for wanted in ["rota.v1.JobService", "rota.v1.ClusterService", "grpc.health.v1.Health"]:
        check(wanted in names, f"reflection does not list {wanted}: {sorted(names)}")

    # Health.
    health = health_pb2_grpc.HealthStub(channels[0])
    status = health.Check(health_pb2.HealthCheckRequest(service="rota.v1.JobService"), timeout=10).status
    check(status == health_pb2.HealthCheckResponse.SERVING, f"health status {status}")

    # Cluster status of each server; exactly one leader among them.
    roles = []
    for channel in channels:
        s = cluster_pb2_grpc.ClusterServiceStub(channel).GetStatus(cluster_pb2.GetStatusRequest(), timeout=10)
        roles.append(s.role)
    check(roles.count(cluster_pb2.ROLE_LEADER) == 1, f"roles {roles}")

    # Write a job through every server, read each back.
    for i, channel in enumerate(channels):
        jobs = job_pb2_grpc.JobServiceStub(channel)
        spec = job_pb2.JobSpec(
            name=f"python-{i}",
            schedule=job_pb2.Schedule(cron="*/15 * * * *", timezone="America/New_York"),
            concurrency=job_pb2.CONCURRENCY_FORBID,
            task=job_pb2.Task(image="debian:12", command=["make", "test"], env={"FROM": "python"}),
            timeout="20m",
        )
        job = jobs.CreateJob(job_pb2.CreateJobRequest(spec=spec), timeout=30).job
        check(job.name == f"python-{i}" and job.generation == 1 and job.uid, f"created {job}")
        got = jobs.GetJob(job_pb2.GetJobRequest(name=job.name), timeout=30).job
        check(got.uid == job.uid, f"read back {got.uid} != {job.uid}")
        check(got.spec.kill_grace == "10s", f"defaults not filled in: {got.spec}")

    listed = job_pb2_grpc.JobServiceStub(channels[-1]).ListJobs(job_pb2.ListJobsRequest(), timeout=30).jobs
    check({j.name for j in listed} >= {f"python-{i}" for i in range(len(channels))}, f"listed {[j.name for j in listed]}")

    stale = job_pb2_grpc.JobServiceStub(channels[-1]).ListJobs(
        job_pb2.ListJobsRequest(consistency=common_pb2.READ_CONSISTENCY_STALE), timeout=30
    )
    check(len(stale.jobs) >= 1, "stale read returned nothing")

    # A bad spec: INVALID_ARGUMENT naming the field; nothing written.
    bad = job_pb2.JobSpec(name="python-bad", schedule=job_pb2.Schedule(cron="not cron"), task=job_pb2.Task(image="x"))
    try:
        job_pb2_grpc.JobServiceStub(channels[0]).CreateJob(job_pb2.CreateJobRequest(spec=bad), timeout=30)
        check(False, "a bad spec was accepted")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, f"bad spec: {e.code()}")
        check("schedule.cron" in e.details(), f"bad spec message does not name the field: {e.details()}")

    # Delete through a follower.
    deleted = job_pb2_grpc.JobServiceStub(channels[1 % len(channels)]).DeleteJob(
        job_pb2.DeleteJobRequest(name="python-0"), timeout=30
    ).job
    check(deleted.name == "python-0", f"deleted {deleted}")
    print("python client: OK")


if __name__ == "__main__":
    main()
