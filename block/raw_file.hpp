// open_raw_file: a Device over a raw image file or a block device.
//
// Opens, never creates. The fd is opened O_CLOEXEC (and O_DIRECT with
// options.direct, i.e. cache=none); all I/O goes through block/io_engine.hpp.
//
//  * read: fills the whole span (loops on short reads; bytes past end of
//    file read as zeroes). In writeback mode a page-cache hit is served by
//    one preadv2(RWF_NOWAIT) on the calling thread.
//  * write: FUA = RWF_DSYNC on that write. flush = fdatasync. In writeback
//    mode a write that need not wait goes into the page cache on the calling
//    thread (io::write_all_cached).
//  * trim: punches a hole (FALLOC_FL_PUNCH_HOLE | KEEP_SIZE) in a regular
//    file; BLKDISCARD on a block device that supports discard.
//  * write_zeroes: may_trim -> punch hole; else FALLOC_FL_ZERO_RANGE, else
//    punch + allocate; when the fs supports none, writes zeroes unless
//    fast_only (then std::errc::operation_not_supported).
//  * block_status: SEEK_DATA/SEEK_HOLE (hole = kExtentHole | kExtentZero,
//    data = 0), at most 1024 extents per call; one data extent when the fs
//    refuses lseek. Block devices report all data.
//  * cache: POSIX_FADV_WILLNEED.
//  * direct: capabilities().min_block = 4096 and every buffer must be
//    aligned to it (AlignedBuffer is).
//  * size(): the file's size at open, grown by writes past it; a block
//    device's size from BLKGETSIZE64.
//
// Errors from open_raw_file name the problem and what to do; the message
// goes to *error_message when given (one line, starting with the path), and
// the error_code says which errno it was.
#pragma once

#include "block/device.hpp"
#include "util/result.hpp"

#include <memory>
#include <string>

namespace fleece::block {

struct RawFileOptions {
  bool read_only = false;
  bool direct = false;  // cache=none: O_DIRECT, aligned buffers, min_block 4096
};

Result<std::shared_ptr<Device>> open_raw_file(const std::string& path, RawFileOptions options,
                                              std::string* error_message = nullptr);

}  // namespace fleece::block
