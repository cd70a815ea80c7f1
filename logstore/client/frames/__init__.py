"""Streams as tables: a topic range as Apache Arrow (and pandas, polars, DuckDB), and back.

A record section stores its values as a length column followed by the values back to back, which
is Arrow's binary layout but for the offsets: so a range becomes Arrow record batches whose value
buffers are views of the fetched bytes, with the offsets computed by numpy. One module a concept:

- ``extras``: the lazy imports of pyarrow, pandas, polars and the error naming the extra;
- ``span``: what ``start``/``end`` mean (offsets, timestamps, "earliest"/"latest") per partition;
- ``fetch``: the Subscribe streams that read a range, bounded in memory;
- ``log_batches``: one fetched log batch -> one ``pyarrow.RecordBatch``, from its bytes;
- ``columns``: the schema, and records decoded by ``decode_columns`` -> record batches (short
  log batches gathered into one);
- ``headers``: record headers -> an Arrow ``map<string, binary>`` column, vectorised;
- ``values``: ``value_format`` "utf8", "json" and "arrow";
- ``read``: ``iter_arrow``, ``read_arrow``, ``read_pandas``, ``read_polars``;
- ``write``: ``Producer.send_arrow``.

Nothing here is imported by ``logstore.client`` until a frames method is called.
"""
