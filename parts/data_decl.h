/* parts/data_decl.h - public declarations of the data chapter (// >>data).
 * Included by moemlora.h right after mml_data_t; never include it directly.
 *
 * On-disk layout written by mml_data_save_dir (the MLoRA paper repo's layout
 * plus a meta file):
 *   DIR/meta.txt                        key=value lines (see docs/DATA.md)
 *   DIR/domain_<k>/{train,val,test}.csv header "uid,pid,domain,label"
 *   DIR/user_emb.bin, DIR/item_emb.bin  pretrained embeddings, when present
 *   DIR/data.mmlc                       binary cache (mml_data_save_cache)
 * mml_data_load prefers DIR/data.mmlc; mml_data_save_dir deletes a stale one.
 *
 * All functions fill *out only on success (it is zeroed on failure) and report
 * the reason through mml_last_error(), naming file:line for malformed input. */

/* Writes the CSV layout of d into dir (created if missing). Every file is
 * written atomically (temp + fsync + rename); meta.txt is written last. */
MOEMLORA_API mml_status mml_data_save_dir(const mml_data_t *d, const char *dir);
/* Loads only the CSV layout (ignores DIR/data.mmlc). Without meta.txt, reads
 * the paper repo's layout: consecutive domain_0, domain_1, ... folders, vocab
 * sizes inferred as max id + 1. */
MOEMLORA_API mml_status mml_data_load_csv(const char *dir, mml_data_t *out);
/* Binary cache: magic, version, byte-order marker, sizes, arrays, CRC32. */
MOEMLORA_API mml_status mml_data_save_cache(const mml_data_t *d, const char *path);
MOEMLORA_API mml_status mml_data_load_cache(const char *path, mml_data_t *out);

/* MovieLens-1M (users.dat + ratings.dat or ratings.no-timestamp.dat, "::",
 * 3- or 4-field rating lines) or MovieLens-100K (u.user, u.occupation, u.data),
 * detected from the files in raw_dir. domain_kind: "gender" (F=0, M=1),
 * "age" (7 groups) or "occupation" (21). Label = (rating == 5). User and movie
 * ids are re-indexed densely in ascending order of the raw id, over the ids
 * that occur in the ratings. Then mml_data_split(seed) (the paper uses 123). */
MOEMLORA_API mml_status mml_movielens_load(const char *raw_dir, const char *domain_kind,
                                           uint64_t seed, mml_data_t *out);

/* Tianchi Taobao theme data: theme_click_log.csv, user_embedding.csv,
 * item_embedding.csv in raw_dir. Domains = the first n_themes (0 = all) theme
 * ids in ascending order among clicks whose user and item have embeddings;
 * positives = distinct clicked (user, item) per theme; per theme a ctr_ratio
 * uniform in [0.2, 0.5] and per user n_neg = round(n_pos / ctr_ratio)
 * negatives from the theme's item pool minus the user's clicks (capped at what
 * is left). Then mml_data_split(seed); pretrained embeddings attached. */
MOEMLORA_API mml_status mml_taobao_load(const char *raw_dir, int n_themes, uint64_t seed,
                                        mml_data_t *out);

/* Writes a synthetic raw set in the Taobao theme format into dir (created if
 * missing): n_users / n_items with embeddings of dim floats, n_clicks click
 * lines over n_themes themes (a few users without embeddings, duplicates
 * included, as in the real data). Deterministic for a seed. */
MOEMLORA_API mml_status mml_taobao_write_synthetic(const char *dir, int64_t n_users,
                                                   int64_t n_items, int32_t n_themes,
                                                   int64_t n_clicks, int32_t dim,
                                                   uint64_t seed);
