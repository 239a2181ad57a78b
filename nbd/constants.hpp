// NBD protocol constants, as named in doc/proto.md of the NBD project.
#pragma once

#include <cstdint>

namespace fleece::nbd {

// Handshake
inline constexpr uint64_t kNbdMagic = 0x4e42444d41474943ull;   // "NBDMAGIC"
inline constexpr uint64_t kIHaveOpt = 0x49484156454F5054ull;   // "IHAVEOPT"
inline constexpr uint64_t kOptReplyMagic = 0x3e889045565a9ull;
inline constexpr uint16_t kFlagFixedNewstyle = 1u << 0;        // handshake flags
inline constexpr uint16_t kFlagNoZeroes = 1u << 1;
inline constexpr uint32_t kClientFixedNewstyle = 1u << 0;      // client flags
inline constexpr uint32_t kClientNoZeroes = 1u << 1;

// Options
enum Option : uint32_t {
  kOptExportName = 1,
  kOptAbort = 2,
  kOptList = 3,
  kOptPeekExport = 4,  // withdrawn
  kOptStartTls = 5,
  kOptInfo = 6,
  kOptGo = 7,
  kOptStructuredReply = 8,
  kOptListMetaContext = 9,
  kOptSetMetaContext = 10,
  kOptExtendedHeaders = 11,
};

// Option reply types
inline constexpr uint32_t kRepErrBit = 1u << 31;
enum OptionReply : uint32_t {
  kRepAck = 1,
  kRepServer = 2,
  kRepInfo = 3,
  kRepMetaContext = 4,
  kRepErrUnsup = kRepErrBit | 1,
  kRepErrPolicy = kRepErrBit | 2,
  kRepErrInvalid = kRepErrBit | 3,
  kRepErrPlatform = kRepErrBit | 4,
  kRepErrTlsReqd = kRepErrBit | 5,
  kRepErrUnknown = kRepErrBit | 6,
  kRepErrShutdown = kRepErrBit | 7,
  kRepErrBlockSizeReqd = kRepErrBit | 8,
  kRepErrTooBig = kRepErrBit | 9,
  kRepErrExtHeaderReqd = kRepErrBit | 10,
};

// NBD_INFO_* in NBD_REP_INFO replies
enum InfoType : uint16_t {
  kInfoExport = 0,
  kInfoName = 1,
  kInfoDescription = 2,
  kInfoBlockSize = 3,
};

// Transmission flags
enum TransmissionFlag : uint16_t {
  kFlagHasFlags = 1u << 0,
  kFlagReadOnly = 1u << 1,
  kFlagSendFlush = 1u << 2,
  kFlagSendFua = 1u << 3,
  kFlagRotational = 1u << 4,
  kFlagSendTrim = 1u << 5,
  kFlagSendWriteZeroes = 1u << 6,
  kFlagSendDf = 1u << 7,
  kFlagCanMultiConn = 1u << 8,
  kFlagSendResize = 1u << 9,
  kFlagSendCache = 1u << 10,
  kFlagSendFastZero = 1u << 11,
  kFlagBlockStatusPayload = 1u << 12,
};

// Transmission
inline constexpr uint32_t kRequestMagic = 0x25609513u;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698u;
inline constexpr uint32_t kStructuredReplyMagic = 0x668e33efu;

enum Command : uint16_t {
  kCmdRead = 0,
  kCmdWrite = 1,
  kCmdDisc = 2,
  kCmdFlush = 3,
  kCmdTrim = 4,
  kCmdCache = 5,
  kCmdWriteZeroes = 6,
  kCmdBlockStatus = 7,
  kCmdResize = 8,
};

enum CommandFlag : uint16_t {
  kCmdFlagFua = 1u << 0,
  kCmdFlagNoHole = 1u << 1,
  kCmdFlagDf = 1u << 2,
  kCmdFlagReqOne = 1u << 3,
  kCmdFlagFastZero = 1u << 4,
  kCmdFlagPayloadLen = 1u << 5,
};

// Structured replies
inline constexpr uint16_t kReplyFlagDone = 1u << 0;
enum ReplyType : uint16_t {
  kReplyNone = 0,
  kReplyOffsetData = 1,
  kReplyOffsetHole = 2,
  kReplyBlockStatus = 5,
  kReplyBlockStatusExt = 6,
  kReplyError = (1u << 15) | 1,
  kReplyErrorOffset = (1u << 15) | 2,
};

// Error values on the wire (not the host's errno numbers)
enum Error : uint32_t {
  kOk = 0,
  kEPERM = 1,
  kEIO = 5,
  kENOMEM = 12,
  kEINVAL = 22,
  kENOSPC = 28,
  kEOVERFLOW = 75,
  kENOTSUP = 95,
  kESHUTDOWN = 108,
};

// base:allocation status bits
inline constexpr uint32_t kStateHole = 1u << 0;
inline constexpr uint32_t kStateZero = 1u << 1;

// Meta context names
inline constexpr const char* kContextBaseAllocation = "base:allocation";
inline constexpr const char* kContextAllocationDepth = "qemu:allocation-depth";
inline constexpr const char* kContextDirtyBitmapPrefix = "qemu:dirty-bitmap:";

// Limits fleece applies
inline constexpr uint32_t kMaxStringLength = 4096;         // names, queries (spec limit)
inline constexpr uint32_t kMaxOptionLength = 1u << 20;     // larger: drained, NBD_REP_ERR_TOO_BIG
inline constexpr uint32_t kDropOptionLength = 32u << 20;   // larger: connection dropped
inline constexpr uint32_t kMaxPayload = 32u << 20;         // advertised max block size
inline constexpr uint32_t kMaxBlockStatusExtents = 1u << 20;

}  // namespace fleece::nbd
