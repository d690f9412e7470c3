#!/usr/bin/env node
'use strict';
/*
 * s3rver, the S3 peer of the tests (tests/integration/test_extstore.py, test_cluster_shared.py,
 * bench/extstore), with its PUT made to answer only once the object is written, as S3 does
 * ("Amazon S3 never adds partial objects; if you receive a success response, Amazon S3 added
 * the entire object").
 *
 * s3rver 3.7.1's FilesystemStore.putObject goes on as soon as its hashing stream has seen the
 * last byte, not when the file stream behind it has written it: in 26 of 50 PUTs of 300,000
 * bytes the object's file was still short when s3rver wrote its metadata, and the answer
 * follows two small file writes later. A test that kills s3rver right after a 200 then finds
 * the object cut short, which MByte rightly reports as a chunk that fails verification.
 * Here putObject resolves once the file stream has finished (every write done: a SIGKILL of
 * the process no longer loses any of it). Everything else is s3rver's own command line.
 */
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { Readable, Transform } = require('stream');
const { pipeline } = require('stream/promises');
const FilesystemStore = require('s3rver/lib/stores/filesystem');

FilesystemStore.prototype.putObject = async function putObject(object) {
  const file = this.getResourcePath(object.bucket, object.key, 'object');
  await fs.promises.mkdir(path.dirname(file), { recursive: true });
  const md5 = crypto.createHash('md5');
  let size = 0;
  const count = new Transform({
    transform(chunk, encoding, done) {
      md5.update(chunk, encoding);
      size += chunk.length;
      done(null, chunk);
    },
  });
  const source = Buffer.isBuffer(object.content) ? Readable.from([object.content]) : object.content;
  await pipeline(source, count, fs.createWriteStream(file));
  const sum = md5.digest('hex');
  await this.putMetadata(object.bucket, object.key, object.metadata, sum);
  return { size, md5: sum };
};

if (require.main === module)
  require('s3rver/bin/s3rver.js');
