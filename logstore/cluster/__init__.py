"""The cluster layer: etcd membership, the controller and replication, between broker and server.

It may import the broker and below, and grpc (to talk to etcd and to other brokers); the broker,
storage and records layers never import it.
"""
