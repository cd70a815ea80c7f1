from logstore.api.v1 import admin_pb2 as _admin_pb2
from logstore.api.v1 import cluster_pb2 as _cluster_pb2
from logstore.api.v1 import groups_pb2 as _groups_pb2
from logstore.api.v1 import records_pb2 as _records_pb2
from logstore.api.v1 import share_pb2 as _share_pb2
from logstore.api.v1 import transactions_pb2 as _transactions_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
