/*
 * Osiris chunks: the unit in which a RabbitMQ stream stores and delivers
 * messages (the OsirisChunk of a Deliver frame). This codec parses the
 * chunk header and walks the records of a user chunk: simple entries and
 * sub-entry batches, uncompressed or gzip. It is pure: no I/O, no logging,
 * no state kept between calls. All multi-byte integers are big-endian.
 */
#ifndef ESS_MQ_CHUNK_H
#define ESS_MQ_CHUNK_H

#include <stddef.h>
#include <stdint.h>

/*
 * The fixed header: magic/version, type, entries, records, timestamp,
 * epoch, first offset, CRC, data length, trailer length, bloom size and
 * three reserved bytes. The stream protocol documentation, osiris_log.erl
 * and every stream client (Go, Java, .NET) agree on 48 bytes, and so do
 * chunks captured from RabbitMQ 3.10.8 (see tests/unit/test_chunk.c). The
 * brief that fixed this interface said 52; that was wrong.
 */
#define ESS_CHUNK_HEADER_SIZE 48

#define ESS_CHUNK_MAGIC_VERSION 0x50 /* high nibble magic 0x5, low nibble version 0 */
#define ESS_CHUNK_TYPE_USER 0
#define ESS_CHUNK_TYPE_TRACKING_DELTA 1
#define ESS_CHUNK_TYPE_TRACKING_SNAPSHOT 2

/* Sub-entry compression codes (bits 6..4 of a sub-batch entry's first byte). */
#define ESS_CHUNK_COMPRESSION_NONE 0
#define ESS_CHUNK_COMPRESSION_GZIP 1

/* A gzip sub-batch whose declared uncompressed size is above this is ESS_ETOOBIG. */
#define ESS_CHUNK_MAX_UNCOMPRESSED (64u * 1024u * 1024u)

typedef struct {
    uint8_t magic_version; /* 0x50 */
    uint8_t chunk_type;    /* 0 user, 1 tracking delta, 2 tracking snapshot */
    uint16_t num_entries;
    uint32_t num_records;
    int64_t timestamp_ms;
    uint64_t epoch;
    uint64_t first_offset;
    uint32_t crc;
    uint32_t data_length;
    uint32_t trailer_length;
    uint8_t bloom_size; /* bytes of bloom filter between header and data (0 before 3.13) */
} ess_chunk_header_t;

/**
 * Parse the fixed header at p. Returns ESS_OK, ESS_ETRUNC if len is less
 * than ESS_CHUNK_HEADER_SIZE, ESS_EPROTO if the magic nibble is not 0x5.
 * Nothing is retained.
 */
int ess_chunk_parse_header(const uint8_t *p, size_t len, ess_chunk_header_t *out);

/**
 * The size of the chunk as the broker delivers it (header, bloom filter and
 * data; a Deliver frame does not carry the trailer, whose length the header
 * still states), so a caller can tell where the records end.
 * Returns ESS_OK with *total set, or the errors of ess_chunk_parse_header.
 */
int ess_chunk_total_size(const uint8_t *p, size_t len, uint64_t *total);

/**
 * Check the header's CRC against the CRC-32 (zlib polynomial, as osiris
 * computes it) of the data section. Returns ESS_OK, ESS_ECORRUPT on a
 * mismatch, or ESS_ETRUNC/ESS_EPROTO for a short or bad chunk.
 */
int ess_chunk_verify_crc(const uint8_t *p, size_t len);

/**
 * Called once per record, in offset order. data is borrowed for the
 * duration of the call only (it may point into a decompression buffer that
 * is freed afterwards). Return non-zero to stop the walk; that value is
 * returned by ess_chunk_each_record as is.
 */
typedef int (*ess_chunk_record_cb)(void *ud, uint64_t offset, const uint8_t *data, size_t len);

/**
 * Walk the records of a user chunk. p is the whole chunk including its
 * header and len its size; len must cover the header, bloom filter and
 * data section (ESS_ETRUNC otherwise); bytes after them (a trailer, if a
 * caller has one) are ignored. Offsets are assigned from
 * first_offset in order. A chunk of another type has no user records: the
 * walk returns ESS_OK without calling cb.
 *
 * The framing of every entry is validated before cb is first called (entry
 * sizes within the data section, entry count, record count matching the
 * header, known compression): such errors deliver nothing. The records
 * inside a gzip sub-batch are checked as it is decompressed, so an error
 * there (ESS_EPROTO) may come after cb has seen the records before it.
 *
 * Errors: ESS_ETRUNC (chunk shorter than its data section), ESS_EPROTO (bad
 * magic, inconsistent framing, corrupt gzip, unsupported compression such
 * as snappy, lz4 or zstd), ESS_ETOOBIG (a sub-batch over
 * ESS_CHUNK_MAX_UNCOMPRESSED), or cb's non-zero return. Never reads outside
 * [p, p + len).
 */
int ess_chunk_each_record(const uint8_t *p, size_t len, ess_chunk_record_cb cb, void *ud);

#endif
