// Interop check: a Node.js client that knows logstore only from its .proto files and the batch
// layout (logstore/records/layout.py). It creates a topic, produces a batch it encodes itself,
// fetches it back, decodes it and prints JSON on stdout:
//
//   {"topic", "base_offset", "last_offset", "batch_hex", "records": [{offset, timestamp, key, value}]}
//
// Usage: node produce_fetch.js HOST:PORT TOPIC PROTO_DIR
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const DEADLINE_MS = 10000;

// -- crc32c (Castagnoli, reflected polynomial 0x82F63B78) ----------------------------------------

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32c(bytes) {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC32C_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// -- the batch layout (little-endian) ------------------------------------------------------------

const HEADER_SIZE = 64;
const CRC_POSITION = 16;
const CRC_START = 20; // the crc covers [CRC_START, batch_length)
const MAGIC = 1;
const COLUMN_COUNT = 5; // offset_delta, timestamp_delta, key_length, value_length, headers_length
const COLUMN_WIDTH = 4;

function asBytes(text) {
  return text === null ? null : Buffer.from(text, "utf8");
}

// records: [{key: string|null, value: string|null, timestamp: number}]
function encodeBatch(records) {
  const count = records.length;
  const keys = records.map((r) => asBytes(r.key));
  const values = records.map((r) => asBytes(r.value));
  const baseTimestamp = records[0].timestamp;
  const maxTimestamp = Math.max(...records.map((r) => r.timestamp));
  const columns = Buffer.alloc(COLUMN_COUNT * COLUMN_WIDTH * count);
  const column = (index, i, value) => columns.writeInt32LE(value, (index * count + i) * COLUMN_WIDTH);
  records.forEach((record, i) => {
    column(0, i, i);
    column(1, i, record.timestamp - baseTimestamp);
    column(2, i, keys[i] === null ? -1 : keys[i].length);
    column(3, i, values[i] === null ? -1 : values[i].length);
    column(4, i, 0);
  });
  const section = Buffer.concat([
    columns,
    ...keys.filter((k) => k !== null),
    ...values.filter((v) => v !== null),
  ]);
  const header = Buffer.alloc(HEADER_SIZE);
  header.writeBigInt64LE(0n, 0); // base_offset: the broker assigns it
  header.writeInt32LE(HEADER_SIZE + section.length, 8); // batch_length
  header.writeInt32LE(0, 12); // leader_epoch
  header.writeUInt8(MAGIC, 20);
  header.writeUInt8(0, 21);
  header.writeUInt16LE(0, 22); // attributes: no codec, not transactional, not control
  header.writeInt32LE(count - 1, 24); // last_offset_delta
  header.writeInt32LE(count, 28); // record_count
  header.writeBigInt64LE(BigInt(baseTimestamp), 32);
  header.writeBigInt64LE(BigInt(maxTimestamp), 40);
  header.writeBigInt64LE(-1n, 48); // producer_id
  header.writeInt16LE(-1, 56); // producer_epoch
  header.writeInt16LE(0, 58);
  header.writeInt32LE(-1, 60); // base_sequence
  const batch = Buffer.concat([header, section]);
  batch.writeUInt32LE(crc32c(batch.subarray(CRC_START)), CRC_POSITION);
  return batch;
}

function decodeBatches(buffer) {
  const records = [];
  let position = 0;
  while (position + HEADER_SIZE <= buffer.length) {
    const batchLength = buffer.readInt32LE(position + 8);
    const batch = buffer.subarray(position, position + batchLength);
    if (batch.readUInt32LE(CRC_POSITION) !== crc32c(batch.subarray(CRC_START))) {
      throw new Error(`crc mismatch in the batch at position ${position}`);
    }
    if ((batch.readUInt16LE(22) & 0x07) !== 0) throw new Error("compressed batches are not decoded here");
    const baseOffset = Number(batch.readBigInt64LE(0));
    const count = batch.readInt32LE(28);
    const baseTimestamp = Number(batch.readBigInt64LE(32));
    const column = (index, i) => batch.readInt32LE(HEADER_SIZE + (index * count + i) * COLUMN_WIDTH);
    let cursor = HEADER_SIZE + COLUMN_COUNT * COLUMN_WIDTH * count;
    const take = (length) => {
      if (length < 0) return null;
      const bytes = batch.subarray(cursor, cursor + length);
      cursor += length;
      return bytes.toString("utf8");
    };
    const keys = [];
    for (let i = 0; i < count; i++) keys.push(take(column(2, i)));
    const values = [];
    for (let i = 0; i < count; i++) values.push(take(column(3, i)));
    for (let i = 0; i < count; i++) {
      records.push({
        offset: baseOffset + column(0, i),
        timestamp: baseTimestamp + column(1, i),
        key: keys[i],
        value: values[i],
      });
    }
    position += batchLength;
  }
  return records;
}

// -- gRPC ---------------------------------------------------------------------------------------

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + DEADLINE_MS }, (err, response) =>
      err ? reject(new Error(`${method}: ${err.code} ${err.details}`)) : resolve(response),
    );
  });
}

async function main() {
  const [address, topic, protoDir] = process.argv.slice(2);
  if (!address || !topic || !protoDir) throw new Error("usage: produce_fetch.js HOST:PORT TOPIC PROTO_DIR");
  if (crc32c(Buffer.from("123456789")) !== 0xe3069283) throw new Error("crc32c self-check failed");

  const definition = protoLoader.loadSync(path.join(protoDir, "logstore/api/v1/logstore.proto"), {
    includeDirs: [protoDir],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
  });
  const api = grpc.loadPackageDefinition(definition).logstore.api.v1;
  const client = new api.LogStore(address, grpc.credentials.createInsecure());

  await call(client, "CreateTopic", { name: topic, partitions: 1, config: {} });
  const now = Date.now() - 1000;
  const batch = encodeBatch([
    { key: null, value: "hello from node", timestamp: now },
    { key: "k1", value: "h\u00e9llo w\u00f6rld \u2713", timestamp: now + 5 },
    { key: "k2", value: "", timestamp: now + 3 },
    { key: "k3", value: null, timestamp: now + 10 },
  ]);
  const produced = await call(client, "Produce", {
    acks: "ACKS_ALL",
    partitions: [{ topic, partition: 0, records: batch }],
  });
  const result = produced.results[0];
  if (result.error) throw new Error(`produce failed: ${result.error.reason}`);
  const fetched = await call(client, "Fetch", {
    partitions: [{ topic, partition: 0, offset: "0" }],
    max_wait_ms: 0,
  });
  const partition = fetched.partitions[0];
  if (partition.error) throw new Error(`fetch failed: ${partition.error.reason}`);
  client.close();

  process.stdout.write(
    JSON.stringify({
      topic,
      base_offset: Number(result.base_offset),
      last_offset: Number(result.last_offset),
      next_offset: Number(partition.next_offset),
      batch_hex: batch.toString("hex"),
      records: decodeBatches(partition.records),
    }) + "\n",
  );
}

setTimeout(() => {
  process.stderr.write("interop script timed out\n");
  process.exit(3);
}, 3 * DEADLINE_MS).unref();

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
