// serve-cpp: moemlora from C++17. The C header drops in unchanged: owning
// handles are unique_ptrs with the library's free functions as deleters and a
// failing call becomes an exception carrying mml_last_error().
//
//   serve-cpp MODEL                 # scores a built-in demo row
//   serve-cpp MODEL 3,17,0 42,5,2   # scores the given uid,pid,domain rows
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace mml {

struct error : std::runtime_error {
    mml_status status;
    error(mml_status st, const std::string &what) : std::runtime_error(what), status(st) {}
};

inline void check(mml_status st) {
    if (st != MML_OK) throw error(st, mml_last_error());
}

struct model_deleter { void operator()(mml_model_t *m) const { mml_model_free(m); } };
struct session_deleter { void operator()(mml_session_t *s) const { mml_session_free(s); } };
using model = std::unique_ptr<mml_model_t, model_deleter>;
using session = std::unique_ptr<mml_session_t, session_deleter>;

inline model load(const std::string &path) {
    mml_model_t *m = nullptr;
    check(mml_model_load(path.c_str(), &m));
    return model(m);
}

inline session open_session(const model &m) {
    mml_session_t *s = nullptr;
    check(mml_session_create(m.get(), &s));
    return session(s);
}

struct row { int32_t uid, pid, domain; };

inline std::vector<float> predict(const session &s, const std::vector<row> &rows) {
    std::vector<int32_t> u, p, d;
    for (const row &r : rows) { u.push_back(r.uid); p.push_back(r.pid); d.push_back(r.domain); }
    std::vector<float> prob(rows.size());
    mml_batch_t b = mml_batch_paper(static_cast<int32_t>(rows.size()), u.data(), p.data(), d.data(), nullptr);
    check(mml_session_predict(s.get(), &b, prob.data()));
    return prob;
}

}  // namespace mml

static mml::row parse_row(const std::string &s) {
    mml::row r{};
    char tail = 0;
    if (std::sscanf(s.c_str(), "%d,%d,%d%c", &r.uid, &r.pid, &r.domain, &tail) != 3)
        throw std::invalid_argument("bad row \"" + s + "\" (expected uid,pid,domain)");
    return r;
}

int main(int argc, char **argv) {
    if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
        std::printf("usage: serve-cpp MODEL [uid,pid,domain ...]\n"
                    "Scores the given rows (default: one demo row) with a model saved by moemlora-train.\n");
        return argc < 2 ? 2 : 0;
    }
    try {
        mml::model m = mml::load(argv[1]);
        const mml_config_t *c = mml_model_config(m.get());
        std::vector<mml::row> rows;
        for (int i = 2; i < argc; i++) rows.push_back(parse_row(argv[i]));
        if (rows.empty()) rows.push_back({0, 0, 0});
        mml::session s = mml::open_session(m);
        std::vector<float> prob = mml::predict(s, rows);
        std::printf("model: %s + %s, %d users, %d items, %d domains\n", mml_model_kind_name(c->model),
                    mml_adapter_name(c->adapter), c->n_users, c->n_items, c->n_domains);
        for (size_t i = 0; i < rows.size(); i++)
            std::printf("%d,%d,%d -> %.6f\n", rows[i].uid, rows[i].pid, rows[i].domain, prob[i]);
        return 0;
    } catch (const mml::error &e) {
        std::fprintf(stderr, "serve-cpp: %s (status %d)\n", e.what(), static_cast<int>(e.status));
    } catch (const std::exception &e) {
        std::fprintf(stderr, "serve-cpp: %s\n", e.what());
    }
    return 1;
}
