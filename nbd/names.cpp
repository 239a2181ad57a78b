// Printable names of NBD values (see names.hpp).
#include "nbd/names.hpp"

#include "nbd/constants.hpp"

namespace fleece::nbd {

std::string_view option_name(uint32_t option) {
  switch (option) {
    case kOptExportName: return "NBD_OPT_EXPORT_NAME";
    case kOptAbort: return "NBD_OPT_ABORT";
    case kOptList: return "NBD_OPT_LIST";
    case kOptPeekExport: return "NBD_OPT_PEEK_EXPORT";
    case kOptStartTls: return "NBD_OPT_STARTTLS";
    case kOptInfo: return "NBD_OPT_INFO";
    case kOptGo: return "NBD_OPT_GO";
    case kOptStructuredReply: return "NBD_OPT_STRUCTURED_REPLY";
    case kOptListMetaContext: return "NBD_OPT_LIST_META_CONTEXT";
    case kOptSetMetaContext: return "NBD_OPT_SET_META_CONTEXT";
    case kOptExtendedHeaders: return "NBD_OPT_EXTENDED_HEADERS";
    default: return "unknown";
  }
}

std::string_view command_name(uint16_t command) {
  switch (command) {
    case kCmdRead: return "NBD_CMD_READ";
    case kCmdWrite: return "NBD_CMD_WRITE";
    case kCmdDisc: return "NBD_CMD_DISC";
    case kCmdFlush: return "NBD_CMD_FLUSH";
    case kCmdTrim: return "NBD_CMD_TRIM";
    case kCmdCache: return "NBD_CMD_CACHE";
    case kCmdWriteZeroes: return "NBD_CMD_WRITE_ZEROES";
    case kCmdBlockStatus: return "NBD_CMD_BLOCK_STATUS";
    case kCmdResize: return "NBD_CMD_RESIZE";
    default: return "unknown";
  }
}

std::string_view error_name(uint32_t error) {
  switch (error) {
    case kOk: return "0";
    case kEPERM: return "NBD_EPERM";
    case kEIO: return "NBD_EIO";
    case kENOMEM: return "NBD_ENOMEM";
    case kEINVAL: return "NBD_EINVAL";
    case kENOSPC: return "NBD_ENOSPC";
    case kEOVERFLOW: return "NBD_EOVERFLOW";
    case kENOTSUP: return "NBD_ENOTSUP";
    case kESHUTDOWN: return "NBD_ESHUTDOWN";
    default: return "unknown";
  }
}

}  // namespace fleece::nbd
