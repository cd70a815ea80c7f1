"""The cluster layer: brokers on etcd (membership, controller, placement) and replication
(replica fetchers, ISR and high watermark). Stands between the broker and the server: it uses
the broker's replication hooks (``logstore.broker.replication``) and never the server. Its etcd
client is ``logstore.cluster.etcd``."""
