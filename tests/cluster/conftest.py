"""Fixtures of the cluster suite: real etcd (``tests.cluster.etcd_fixture``, a plugin) and real
clustered brokers (``cluster_fixture``)."""

from tests.cluster.cluster_fixture import cluster_factory, module_cluster_factory  # noqa: F401 - fixtures
