/* SPDX-License-Identifier: MIT */
/**
 * @file stream.h
 * QEMU's migration stream: framing and the "ram" section.
 *
 * The writer produces what QEMU 7.2 and later load: header, configuration,
 * a START section with the block list, PART/END sections with pages, the
 * section footers, EOF and the vmdesc JSON trailer.  The reader is a pull
 * parser: each migram_stream_reader_next() returns one record, and treats
 * the stream as hostile: every length is bounded before use, every unknown
 * type, flag or version is an error naming what it saw and the byte offset
 * where the record starts.  docs/wire-format.md has the byte layouts.
 *
 * Writer sequence:
 *
 *     begin(machine)                     header + configuration
 *     ram_start(blocks, n)               START "ram" + block list + EOS
 *     { ram_open(false) { page | zero_page }* ram_close() }*   PART sections
 *     ram_open(true) { page | zero_page }* ram_close()         END section
 *     finish()                           EOF + vmdesc
 *
 * Threads: a writer or reader is used by one thread at a time (the channel's).
 */
#ifndef MIGRAM_STREAM_H
#define MIGRAM_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#include <migram/channel.h>

G_BEGIN_DECLS

/** "QEVM" */
#define MIGRAM_QEMU_VM_FILE_MAGIC 0x5145564Du
/** The only stream version QEMU loads. */
#define MIGRAM_QEMU_VM_FILE_VERSION 3u
/** The "ram" section's version. */
#define MIGRAM_QEMU_RAM_SECTION_VERSION 4u

/** Top-level type bytes. */
enum {
	MIGRAM_QEMU_VM_EOF = 0x00,
	MIGRAM_QEMU_VM_SECTION_START = 0x01,
	MIGRAM_QEMU_VM_SECTION_PART = 0x02,
	MIGRAM_QEMU_VM_SECTION_END = 0x03,
	MIGRAM_QEMU_VM_SECTION_FULL = 0x04,
	MIGRAM_QEMU_VM_SUBSECTION = 0x05,
	MIGRAM_QEMU_VM_VMDESCRIPTION = 0x06,
	MIGRAM_QEMU_VM_CONFIGURATION = 0x07,
	MIGRAM_QEMU_VM_COMMAND = 0x08,
	MIGRAM_QEMU_VM_SECTION_FOOTER = 0x7e,
};

/** Flags in the low bits of a RAM record word. */
enum {
	MIGRAM_RAM_FLAG_FULL = 0x001,     /**< obsolete; refused */
	MIGRAM_RAM_FLAG_ZERO = 0x002,     /**< page of one byte value */
	MIGRAM_RAM_FLAG_MEM_SIZE = 0x004, /**< the block list */
	MIGRAM_RAM_FLAG_PAGE = 0x008,     /**< raw page */
	MIGRAM_RAM_FLAG_EOS = 0x010,      /**< end of the section's data */
	MIGRAM_RAM_FLAG_CONTINUE = 0x020, /**< same block as before */
	MIGRAM_RAM_FLAG_XBZRLE = 0x040,   /**< refused: not supported yet */
	MIGRAM_RAM_FLAG_HOOK = 0x080,     /**< RDMA; refused */
	MIGRAM_RAM_FLAG_COMPRESS_PAGE = 0x100, /**< refused: not supported yet
						*/
	MIGRAM_RAM_FLAG_MULTIFD_FLUSH = 0x200, /**< refused: not supported yet
						*/
};

/** One entry of the block list (MEM_SIZE). */
typedef struct {
	const char *idstr;    /**< 1 to 255 bytes */
	uint64_t used_length; /**< bytes */
	uint64_t page_size;   /**< written only by postcopy streams; 0 here */
} MigramStreamBlock;

/** Opaque; single owner. */
typedef struct MigramStreamWriter MigramStreamWriter;

/**
 * Create a writer on @p ch.
 *
 * @param ch the channel; borrowed, must outlive the writer.
 * @return a new writer; caller frees with migram_stream_writer_free().
 *
 * Context: The channel's thread.
 */
MigramStreamWriter *migram_stream_writer_new(MigramChannel *ch);

/**
 * Free a writer (the channel is not flushed or closed).
 *
 * @param w the writer, or NULL.
 *
 * Context: The channel's thread.
 */
void migram_stream_writer_free(MigramStreamWriter *w);

/**
 * Queue the file header and the configuration section.
 *
 * @param w the writer.
 * @param machine_type the machine name a QEMU destination compares with its
 *        own ("none", "pc-i440fx-7.2", ...), at most 255 bytes.
 *
 * Context: The channel's thread.
 */
void migram_stream_writer_begin(MigramStreamWriter *w,
				const char *machine_type);

/**
 * Queue the complete START section of "ram": the block list, EOS, footer.
 *
 * @param w the writer.
 * @param blocks the migratable blocks, in the order the source keeps them.
 * @param n their number.
 *
 * Context: The channel's thread.
 */
void migram_stream_writer_ram_start(MigramStreamWriter *w,
				    const MigramStreamBlock *blocks, size_t n);

/**
 * Queue the header of a PART (or, with @p last, the END) section of "ram".
 *
 * @param w the writer.
 * @param last true for the END section.
 *
 * Context: The channel's thread.
 */
void migram_stream_writer_ram_open(MigramStreamWriter *w, bool last);

/**
 * Queue a PAGE record; the payload is queued by reference.
 *
 * The block name is written only when it differs from the previous page
 * record's (CONTINUE otherwise); names are compared by pointer first.
 *
 * @param w the writer.
 * @param idstr the block's name.
 * @param offset the page's byte offset in the block (target-page aligned).
 * @param data the 4 KiB page; must stay mapped until the channel's next
 *        flush returns.
 *
 * Context: The channel's thread.
 */
void migram_stream_writer_page(MigramStreamWriter *w, const char *idstr,
			       uint64_t offset, const void *data);

/**
 * Queue a ZERO record (fill byte 0).
 *
 * @param w the writer.
 * @param idstr the block's name.
 * @param offset the page's byte offset in the block.
 *
 * Context: The channel's thread.
 */
void migram_stream_writer_zero_page(MigramStreamWriter *w, const char *idstr,
				    uint64_t offset);

/**
 * Queue EOS and the footer, closing the section opened by
 * migram_stream_writer_ram_open().
 *
 * @param w the writer.
 *
 * Context: The channel's thread.
 */
void migram_stream_writer_ram_close(MigramStreamWriter *w);

/**
 * Forget the last block named, so the next page record names its block
 * (after the block list changed, or on a new channel).
 *
 * @param w the writer.
 *
 * Context: The channel's thread.
 */
void migram_stream_writer_reset_continue(MigramStreamWriter *w);

/**
 * Queue EOF and the vmdesc trailer (`{"page_size": 4096, "devices": []}`,
 * padded so that QEMU's analysis script can locate it), then flush.
 *
 * @param w the writer.
 * @param error the channel's error.
 * @return true when everything was written.
 *
 * Context: The channel's thread.  May block.
 */
bool migram_stream_writer_finish(MigramStreamWriter *w, GError **error);

/** What migram_stream_reader_next() found. */
typedef enum {
	MIGRAM_STREAM_REC_CONFIGURATION = 1, /**< name = machine type */
	MIGRAM_STREAM_REC_SECTION_START,     /**< a START section header */
	MIGRAM_STREAM_REC_SECTION_PART,      /**< a PART section header */
	MIGRAM_STREAM_REC_SECTION_END,       /**< an END section header */
	MIGRAM_STREAM_REC_SECTION_FULL,      /**< a FULL section header */
	MIGRAM_STREAM_REC_BLOCK,             /**< a block list entry */
	MIGRAM_STREAM_REC_PAGE,         /**< a page; payload still to read */
	MIGRAM_STREAM_REC_ZERO_PAGE,    /**< a zero page */
	MIGRAM_STREAM_REC_SECTION_DONE, /**< a RAM section's EOS (+ footer) */
	MIGRAM_STREAM_REC_COMMAND,      /**< a command with its payload */
	MIGRAM_STREAM_REC_EOF,          /**< the EOF byte */
	MIGRAM_STREAM_REC_VMDESC,       /**< the JSON trailer */
	MIGRAM_STREAM_REC_END,          /**< nothing more (after EOF/vmdesc) */
} MigramStreamRecordType;

/** One record.  Pointers are owned by the reader, valid until next(). */
typedef struct {
	MigramStreamRecordType type;
	uint64_t stream_offset; /**< byte offset where the record starts */
	const char *name;       /**< section idstr, block idstr, machine type */
	uint32_t section_id;    /**< sections */
	uint32_t instance_id;   /**< START/FULL */
	uint32_t version_id;    /**< START/FULL */
	bool is_ram;            /**< sections: the "ram" section */
	uint64_t offset;        /**< PAGE/ZERO_PAGE: byte offset in the block */
	uint64_t length;        /**< BLOCK: used length; PAGE: payload bytes;
				     COMMAND/VMDESC: payload bytes */
	uint64_t page_size;     /**< BLOCK: page size if the stream sent one */
	uint8_t fill;           /**< ZERO_PAGE: the fill byte (0 from QEMU) */
	uint16_t command;       /**< COMMAND */
	const guint8 *data;     /**< COMMAND/VMDESC payload */
} MigramStreamRecord;

/** Opaque; single owner. */
typedef struct MigramStreamReader MigramStreamReader;

/**
 * Create a reader on @p ch.
 *
 * @param ch the channel; borrowed, must outlive the reader.
 * @return a new reader; caller frees with migram_stream_reader_free().
 *
 * Context: The channel's thread.
 */
MigramStreamReader *migram_stream_reader_new(MigramChannel *ch);

/**
 * Free a reader.
 *
 * @param r the reader, or NULL.
 *
 * Context: The channel's thread.
 */
void migram_stream_reader_free(MigramStreamReader *r);

/**
 * Read the next record.
 *
 * The first call reads and checks the file header.  After a PAGE record
 * the payload is still in the stream: read it with
 * migram_stream_reader_read_page() or let the next call skip it.  After a
 * non-RAM section header the section's body follows and only its owner
 * knows its layout: the caller consumes it from the channel, and the next
 * call reads the footer.
 *
 * @param r the reader.
 * @param rec where the record is stored.
 * @param error MIGRAM_ERROR_PROTOCOL for a malformed, truncated or
 *        hostile stream (the message says what and at which byte),
 *        MIGRAM_ERROR_UNSUPPORTED for a recognised feature migram does not
 *        implement (XBZRLE, compression, multifd), MIGRAM_ERROR_IO.
 * @return true when @p rec holds a record.
 *
 * Context: The channel's thread.  May block.
 */
bool migram_stream_reader_next(MigramStreamReader *r, MigramStreamRecord *rec,
			       GError **error);

/**
 * Read the payload of the PAGE record just returned into @p dst.
 *
 * @param r the reader.
 * @param dst at least the record's length bytes.
 * @param error as for migram_stream_reader_next().
 * @return true on success.
 *
 * Context: The channel's thread.  May block.
 */
bool migram_stream_reader_read_page(MigramStreamReader *r, void *dst,
				    GError **error);

/**
 * The target page size in force (4096 unless the configuration said
 * otherwise).
 *
 * @param r the reader.
 * @return the page size in bytes.
 *
 * Context: The channel's thread.
 */
uint64_t migram_stream_reader_page_size(const MigramStreamReader *r);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramStreamWriter, migram_stream_writer_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramStreamReader, migram_stream_reader_free)

G_END_DECLS

#endif /* MIGRAM_STREAM_H */
