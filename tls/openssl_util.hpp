// Internal to tls/: owning pointers for OpenSSL objects and error text.
// Includes OpenSSL headers; never include it outside tls/*.cpp and tests.
#pragma once

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>
#include <string>

namespace fleece::tls::ossl {

template <auto Free>
struct Deleter {
  template <class T>
  void operator()(T* p) const { Free(p); }
};

using BioPtr = std::unique_ptr<BIO, Deleter<BIO_free_all>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509_free>>;
using X509CrlPtr = std::unique_ptr<X509_CRL, Deleter<X509_CRL_free>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using StorePtr = std::unique_ptr<X509_STORE, Deleter<X509_STORE_free>>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX_free>>;
using SessionPtr = std::unique_ptr<SSL_SESSION, Deleter<SSL_SESSION_free>>;

// The reason text of the oldest queued OpenSSL error ("" if none), then
// clears the queue so that it cannot leak into the next operation.
std::string take_error();

// "2031-05-01 12:00:00 UTC"
std::string format_time(const ASN1_TIME* t);

// The subject or issuer in RFC 4514 order ("CN=a,O=b,C=GB"), UTF-8 kept.
std::string name_to_string(const X509_NAME* name);

}  // namespace fleece::tls::ossl
