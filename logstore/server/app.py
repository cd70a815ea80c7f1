"""Running the server: open the broker, bind gRPC (with health and reflection) and the HTTP
listener (/metrics and the web console), and shut down cleanly on SIGTERM or SIGINT.

Shutdown: stop accepting new calls; long polls and subscriptions are woken and end; in-flight
requests get ``grace_period_s`` to finish; then every partition is flushed and fsynced, the
clean-shutdown markers are written, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import dataclasses
import logging
import os
import signal
import ssl
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from logstore.api.v1 import logstore_pb2
from logstore.broker import Broker
from logstore.errors import InvalidConfigError, LogstoreError, StorageError
from logstore.server.auth import AuthInterceptor, Authorizer, SecurityConfig
from logstore.server.config import ServerConfig, split_address
from logstore.server.console import Console, HttpServer
from logstore.server.console.pages.overview import BrokerRow, ClusterView
from logstore.server.handlers import generic_handler
from logstore.server.logs import configure
from logstore.server.metrics import Metrics
from logstore.server.replica_listener import ReplicaListener
from logstore.server.service import LogStoreService, freeze_startup_objects
from logstore.server.stream_listener import StreamListener

log = logging.getLogger("logstore.server")

SERVICE_NAME = logstore_pb2.DESCRIPTOR.services_by_name["LogStore"].full_name

#: After SIGTERM, new calls are refused with UNAVAILABLE for at least this long before the
#: transport stops accepting them.
REFUSAL_WINDOW_S = 0.25

#: Exit codes of ``logstore serve``.
EXIT_OK = 0
EXIT_CONFIG = 2  # bad configuration or address
EXIT_STORAGE = 3  # the data directory cannot be used


def tune_malloc() -> None:
    """Keep glibc from mmapping (and page-faulting) every fresh 1 MiB buffer.

    Same as MALLOC_MMAP_THRESHOLD_=64 MiB MALLOC_TRIM_THRESHOLD_=256 MiB; a no-op off glibc.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 64 << 20)
    mallopt(m_trim_threshold, 256 << 20)


def cluster_view(cluster: Any) -> Callable[[], ClusterView]:
    """The console overview's cluster card, read from the broker's metadata when drawn."""

    def view() -> ClusterView:
        metadata = cluster.metadata
        controller = metadata.controller[0] if metadata.controller else -1
        brokers = [
            BrokerRow(str(b), record.address, "shutting down" if record.shutting_down else "alive", b == controller)
            for b, record in sorted(metadata.brokers.items())
        ]
        return ClusterView(brokers, cluster.under_replicated_partitions())

    return view


def placement_view(cluster: Any) -> Callable[[str, int], tuple[str, str]]:
    """The topic page's leader and ISR columns, from the cluster's metadata."""

    def view(topic: str, partition: int) -> tuple[str, str]:
        state = cluster.metadata.state(topic, partition)
        if state is None:
            return "unknown", ""
        leader = f"broker {state.leader}" if state.leader >= 0 else "none (offline)"
        return leader, ", ".join(str(b) for b in state.isr)

    return view


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from the config's PEM files, or None for plaintext."""
    if not config.tls_cert and not config.tls_key:
        if config.tls_client_ca:
            raise InvalidConfigError("tls_client_ca needs tls_cert and tls_key", key="tls_client_ca")
        return None
    if not (config.tls_cert and config.tls_key):
        raise InvalidConfigError("TLS needs both tls_cert and tls_key", key="tls_cert")
    chain = _read_pem(config.tls_cert, "tls_cert")
    key = _read_pem(config.tls_key, "tls_key")
    client_ca = _read_pem(config.tls_client_ca, "tls_client_ca") if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def http_ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The same TLS for the metrics and console listener as for gRPC (None: plain HTTP)."""
    if not config.tls_cert:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    if config.tls_client_ca:
        context.load_verify_locations(config.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _read_pem(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        option = "--" + key.replace("_", "-")
        raise InvalidConfigError(f"cannot read the {key} file {path!r} ({option}): {exc.strerror}",
                                 key=key, value=path) from None


def grpc_options(config: ServerConfig) -> list[tuple[str, int]]:
    broker = config.broker
    # A response may exceed max_fetch_bytes / max_subscribe_bytes by one whole batch (at least one
    # is always returned), and no stored batch is larger than the request it came in.
    largest_response = max(broker.max_fetch_bytes, broker.max_subscribe_bytes, broker.max_request_bytes)
    return [
        ("grpc.max_receive_message_length", broker.max_request_bytes),
        ("grpc.max_send_message_length", largest_response + (1 << 20)),
        ("grpc.so_reuseport", 0),
        # megabyte messages: big HTTP/2 frames and socket reads (measured ~20% more bandwidth)
        ("grpc.http2.max_frame_size", 16 * 1024 * 1024 - 1),
        ("grpc.experimental.tcp_read_chunk_size", 1 << 20),
        ("grpc.experimental.tcp_min_read_chunk_size", 256 << 10),
        ("grpc.experimental.tcp_max_read_chunk_size", 4 << 20),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        # no BDP probing: a stream's window grows only while its handler reads, so requests the
        # broker does not read yet (max_queued_request_bytes) stay with the client
        ("grpc.http2.bdp_probe", 0),
    ]


async def run(config: ServerConfig) -> int:
    loop = asyncio.get_running_loop()
    try:  # before the data directory is touched: a bad setting changes nothing on disk
        security = SecurityConfig.load(config.security_file or None)
        credentials = server_credentials(config)
    except (LogstoreError, OSError) as exc:
        log.error("bad security settings: %s", exc)
        return EXIT_CONFIG
    try:
        broker = Broker.open(config.data_dir, config.broker, clustered=bool(config.cluster))
    except StorageError as exc:
        log.error("%s", exc.message, extra={"reason": exc.reason, "data_dir": str(config.data_dir)})
        return EXIT_STORAGE
    broker.start()
    metrics = Metrics()
    metrics.attach(broker)
    interceptors = (
        [AuthInterceptor(security, lambda reason: metrics.errors.labels(reason=reason).inc())]
        if security.enabled
        else None
    )
    server = grpc.aio.server(
        options=grpc_options(config),
        interceptors=interceptors,
        maximum_concurrent_rpcs=config.broker.max_concurrent_rpcs,
    )
    service = LogStoreService(broker, metrics, Authorizer(security))
    server.add_generic_rpc_handlers((generic_handler(service),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    try:
        host, port = split_address(config.listen)
        if credentials is None:
            bound = server.add_insecure_port(f"{host}:{port}")
        else:
            bound = server.add_secure_port(f"{host}:{port}", credentials)
    except (LogstoreError, RuntimeError) as exc:
        log.error("cannot listen on %s: %s", config.listen, exc)
        await broker.close()
        return EXIT_CONFIG
    if bound == 0:
        log.error("cannot listen on %s: address in use or not available", config.listen)
        await broker.close()
        return EXIT_CONFIG
    service.advertised = f"{host}:{bound}"
    cluster = None
    try:
        cluster_config = config.cluster_config(service.advertised)
    except LogstoreError as exc:
        log.error("bad cluster settings: %s", exc)
        await broker.close()
        return EXIT_CONFIG
    stream_listener: StreamListener | None = None
    if credentials is None and config.stream_port >= 0:
        stream_listener = StreamListener(service, security)
        try:
            service.stream_port = await stream_listener.start(host, config.stream_port)
        except OSError as exc:
            await stream_listener.close()
            stream_listener = None
            if config.stream_port:
                log.error("cannot listen on the stream port %s:%d: %s", host, config.stream_port, exc)
                await broker.close()
                return EXIT_CONFIG
            log.warning("no Subscribe data channel on %s (%s): table reads go through gRPC", host, exc)
        else:
            if cluster_config is not None:
                cluster_config = dataclasses.replace(cluster_config, stream_port=service.stream_port)
    replica_listener: ReplicaListener | None = None
    if cluster_config is not None and config.replica_port >= 0:
        replica_listener = ReplicaListener(service, security, http_ssl_context(config))
        replica_host = cluster_config.advertise.rpartition(":")[0].strip("[]")
        try:
            replica_bound = await replica_listener.start(replica_host, config.replica_port)
        except OSError as exc:
            await replica_listener.close()
            replica_listener = None
            if config.replica_port:
                log.error("cannot listen on the replica port %s:%d: %s", replica_host, config.replica_port, exc)
                if stream_listener is not None:
                    await stream_listener.close()
                await broker.close()
                return EXIT_CONFIG
            log.warning("no replica data channel on %s (%s): followers fetch from here over gRPC",
                        replica_host, exc)
        else:
            shown = f"[{replica_host}]" if ":" in replica_host else replica_host
            cluster_config = dataclasses.replace(cluster_config, replica_address=f"{shown}:{replica_bound}")
    freeze_startup_objects()
    await server.start()
    if cluster_config is not None:
        from logstore.cluster.node import ClusterNode

        cluster = ClusterNode(broker, cluster_config)
        service.cluster = cluster  # answers UNAVAILABLE until it has joined
        try:
            await cluster.start()
        except Exception as exc:
            log.error("cannot join the cluster at %s: %s", cluster_config.etcd_endpoints, exc)
            await server.stop(0)
            await cluster.stop()
            if replica_listener is not None:
                await replica_listener.close()
            if stream_listener is not None:
                await stream_listener.close()
            await broker.close()
            return EXIT_CONFIG
        service.advertised = cluster_config.advertise
        metrics.attach_cluster(cluster)
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    metrics_address = ""
    console = Console(
        broker, metrics, security, enabled=config.console, writes=config.console_writes,
    )
    if cluster is not None:
        console.cluster_view = cluster_view(cluster)
        console.placement_view = placement_view(cluster)
    http: HttpServer | None = None
    if config.metrics_listen:
        try:
            metrics_host, metrics_port = split_address(config.metrics_listen)
            http = HttpServer(console.handle, http_ssl_context(config))
            metrics_bound = await http.start(metrics_host, metrics_port)
        except (LogstoreError, OSError, ssl.SSLError) as exc:
            log.error("cannot listen on %s: %s", config.metrics_listen, exc)
            await server.stop(0)
            if replica_listener is not None:
                await replica_listener.close()
            if stream_listener is not None:
                await stream_listener.close()
            await broker.close()
            return EXIT_CONFIG
        metrics_address = f"{metrics_host}:{metrics_bound}"
        await console.start()
    log.info(
        "logstore serving",
        extra={
            "listen": f"{host}:{bound}",
            "stream_port": service.stream_port,  # 0: none
            "tls": credentials is not None,
            "authentication": security.enabled,
            "metrics": metrics_address,
            "data_dir": str(config.data_dir),
            "pid": os.getpid(),
        },
    )
    if http is not None and config.console:
        scheme = "https" if http.ssl_context is not None else "http"
        log.info("web console at %s://%s/", scheme, metrics_address, extra={"console": metrics_address})
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down", extra={"grace_period_s": config.grace_period_s})
    if cluster is not None:
        await cluster.shutdown()  # hand leaderships over while still serving
    await health_servicer.enter_graceful_shutdown()
    # Drain: new calls are refused (UNAVAILABLE, SHUTTING_DOWN) by the broker, long polls and
    # subscriptions return at once, and calls in flight get the grace period to finish.
    broker.begin_shutdown()
    started = loop.time()
    deadline = started + config.grace_period_s
    # at least a moment of clean refusals, so that calls racing the signal see UNAVAILABLE
    # (SHUTTING_DOWN) rather than a cancelled stream
    refusing_until = started + min(REFUSAL_WINDOW_S, config.grace_period_s)
    while (service.in_flight or loop.time() < refusing_until) and loop.time() < deadline:
        await asyncio.sleep(0.02)
    await server.stop(max(deadline - loop.time(), 0))
    if replica_listener is not None:
        await replica_listener.close()
    if stream_listener is not None:
        await stream_listener.close()
    if http is not None:
        await http.close()
    await console.close()
    await broker.close()
    log.info("clean shutdown")
    return EXIT_OK


def serve(config: ServerConfig) -> int:
    """Run the server until SIGTERM/SIGINT; returns the process exit code."""
    tune_malloc()
    configure(config.log_format, config.log_level)
    return asyncio.run(run(config))
