#include "tls/x509_files.hpp"

#include "tls/config.hpp"
#include "tls/credential_file.hpp"
#include "util/log.hpp"

#include <fmt/format.h>

#include <openssl/pem.h>
#include <openssl/x509_vfy.h>

#include <sys/stat.h>

namespace fleece::tls {
namespace {

ossl::BioPtr memory_bio(const std::string& text) {
  return ossl::BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

std::vector<ossl::X509Ptr> read_certificates(const std::string& path, std::string_view what) {
  std::string text = read_credential_file(path, what);
  auto bio = memory_bio(text);
  std::vector<ossl::X509Ptr> certs;
  while (X509* c = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) certs.emplace_back(c);
  ERR_clear_error();  // the loop ends on "no start line"
  if (certs.empty()) {
    throw ConfigError(fmt::format("{} '{}': no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)", what, path));
  }
  return certs;
}

// Refuses a certificate outside its validity period.
void check_validity(X509* cert, const std::string& path, std::string_view what) {
  std::string subject = ossl::name_to_string(X509_get_subject_name(cert));
  if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0) {
    throw ConfigError(fmt::format("{} '{}' ({}) is not valid before {}; check the clock or make a new one",
                                  what, path, subject, ossl::format_time(X509_get0_notBefore(cert))));
  }
  if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0) {
    throw ConfigError(fmt::format("{} '{}' ({}) expired on {}; renew it", what, path, subject,
                                  ossl::format_time(X509_get0_notAfter(cert))));
  }
}

int no_password(char*, int, int, void*) { return -1; }  // never prompt on a terminal

}  // namespace

X509Files X509Files::load(const std::string& dir, bool verify_peer) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw ConfigError(fmt::format("--tls-creds '{}': no such directory (expected ca-cert.pem, server-cert.pem, "
                                  "server-key.pem as for QEMU's tls-creds-x509)", dir));
  }
  X509Files files;
  const std::string cert_path = dir + "/server-cert.pem";
  const std::string key_path = dir + "/server-key.pem";
  const std::string ca_path = dir + "/ca-cert.pem";
  const std::string dh_path = dir + "/dh-params.pem";
  const std::string crl_path = dir + "/ca-crl.pem";

  auto certs = read_certificates(cert_path, "server certificate");
  files.cert = std::move(certs.front());
  for (size_t i = 1; i < certs.size(); ++i) files.chain.push_back(std::move(certs[i]));
  check_validity(files.cert.get(), cert_path, "server certificate");

  std::string key_text = read_credential_file(key_path, "server key");
  if (auto w = warn_if_exposed(key_path, "server key"); !w.empty()) files.warnings.push_back(w);
  if (key_text.find("ENCRYPTED") != std::string::npos) {
    throw ConfigError(fmt::format("server key '{}' is encrypted; fleece needs it unencrypted "
                                  "(openssl pkey -in KEY -out {})", key_path, key_path));
  }
  auto key_bio = memory_bio(key_text);
  files.key.reset(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, no_password, nullptr));
  if (!files.key) {
    throw ConfigError(fmt::format("server key '{}': no usable PEM private key in it ({})", key_path, ossl::take_error()));
  }
  if (X509_check_private_key(files.cert.get(), files.key.get()) != 1) {
    ERR_clear_error();
    throw ConfigError(fmt::format("server key '{}' does not match server certificate '{}' (it belongs to another "
                                  "certificate)", key_path, cert_path));
  }

  if (file_exists(ca_path)) {
    files.ca = read_certificates(ca_path, "CA certificate");
    for (auto& ca : files.ca) {
      try {
        check_validity(ca.get(), ca_path, "CA certificate");
      } catch (const ConfigError& e) {
        if (verify_peer) throw;
        files.warnings.emplace_back(e.what());
        FLEECE_LOG_WARN("tls", "{}", e.what());
      }
    }
    // QEMU refuses a server certificate its own CA does not sign; fleece only
    // warns, since clients may trust the server through another CA.
    ossl::StorePtr store(X509_STORE_new());
    for (auto& ca : files.ca) X509_STORE_add_cert(store.get(), ca.get());
    STACK_OF(X509)* untrusted = sk_X509_new_null();
    for (auto& c : files.chain) sk_X509_push(untrusted, c.get());
    ossl::StoreCtxPtr vctx(X509_STORE_CTX_new());
    X509_STORE_CTX_init(vctx.get(), store.get(), files.cert.get(), untrusted);
    if (X509_verify_cert(vctx.get()) != 1) {
      std::string w = fmt::format("server certificate '{}' does not verify against '{}': {}; clients that trust only "
                                  "that CA will refuse fleece", cert_path, ca_path,
                                  X509_verify_cert_error_string(X509_STORE_CTX_get_error(vctx.get())));
      FLEECE_LOG_WARN("tls", "{}", w);
      files.warnings.push_back(std::move(w));
    }
    sk_X509_free(untrusted);
    ERR_clear_error();
  } else if (verify_peer) {
    throw ConfigError(fmt::format("--tls-verify-peer: CA certificate '{}': no such file; it is needed to check "
                                  "client certificates", ca_path));
  }

  if (file_exists(crl_path)) {
    std::string text = read_credential_file(crl_path, "CRL");
    auto bio = memory_bio(text);
    while (X509_CRL* crl = PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr)) files.crls.emplace_back(crl);
    ERR_clear_error();
    if (files.crls.empty()) throw ConfigError(fmt::format("CRL '{}': no PEM X509 CRL in it", crl_path));
  }

  if (file_exists(dh_path)) {
    std::string text = read_credential_file(dh_path, "DH parameters");
    auto bio = memory_bio(text);
    files.dh.reset(PEM_read_bio_Parameters(bio.get(), nullptr));
    if (!files.dh) {
      throw ConfigError(fmt::format("DH parameters '{}': no PEM DH parameters in it ({}); make them with "
                                    "'certtool --generate-dh-params' or delete the file", dh_path, ossl::take_error()));
    }
  }
  return files;
}

void X509Files::install(SSL_CTX* ctx, bool verify_peer) const {
  auto check = [](int ok, std::string_view step) {
    if (ok != 1) throw ConfigError(fmt::format("TLS: {} failed: {}", step, ossl::take_error()));
  };
  check(SSL_CTX_use_certificate(ctx, cert.get()), "using the server certificate");
  for (const auto& c : chain) check(static_cast<int>(SSL_CTX_add1_chain_cert(ctx, c.get())), "adding an intermediate certificate");
  check(SSL_CTX_use_PrivateKey(ctx, key.get()), "using the server key");
  check(SSL_CTX_check_private_key(ctx), "checking the server key");
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  for (const auto& c : ca) {
    check(X509_STORE_add_cert(store, c.get()), "adding the CA certificate");
    if (verify_peer) check(SSL_CTX_add_client_CA(ctx, c.get()), "naming the CA to clients");
  }
  for (const auto& crl : crls) check(X509_STORE_add_crl(store, crl.get()), "adding the CRL");
  if (!crls.empty()) X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
  if (dh) {
    EVP_PKEY_up_ref(dh.get());
    if (SSL_CTX_set0_tmp_dh_pkey(ctx, dh.get()) != 1) {
      EVP_PKEY_free(dh.get());
      throw ConfigError(fmt::format("TLS: using the DH parameters failed: {}", ossl::take_error()));
    }
  } else {
    SSL_CTX_set_dh_auto(ctx, 1);
  }
}

}  // namespace fleece::tls
