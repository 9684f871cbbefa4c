// Why this shim exists: libunwind's entry points (unw_init_remote, unw_step, unw_get_reg, ...) are
// macros that expand to architecture-prefixed names (_Ux86_64_...), which Swift cannot see, and
// `_UPT_accessors` is a mutable C global that Swift 6 rejects as shared state.
#ifndef GRAFT_CLIBUNWIND_SHIM_H
#define GRAFT_CLIBUNWIND_SHIM_H
#include <libunwind.h>
#include <libunwind-ptrace.h>

static inline unw_addr_space_t graft_unw_create_addr_space(void) {
    return unw_create_addr_space(&_UPT_accessors, 0);
}
static inline void graft_unw_destroy_addr_space(unw_addr_space_t as) { unw_destroy_addr_space(as); }
static inline int graft_unw_init_remote(unw_cursor_t *c, unw_addr_space_t as, void *upt) {
    return unw_init_remote(c, as, upt);
}
static inline int graft_unw_step(unw_cursor_t *c) { return unw_step(c); }
static inline int graft_unw_get_ip(unw_cursor_t *c, unw_word_t *ip) { return unw_get_reg(c, UNW_REG_IP, ip); }
static inline int graft_unw_get_sp(unw_cursor_t *c, unw_word_t *sp) { return unw_get_reg(c, UNW_REG_SP, sp); }
static inline int graft_unw_is_signal_frame(unw_cursor_t *c) { return unw_is_signal_frame(c); }
static inline void graft_unw_flush_cache(unw_addr_space_t as) { unw_flush_cache(as, 0, 0); }
static inline int graft_unw_set_caching_policy(unw_addr_space_t as) { return unw_set_caching_policy(as, UNW_CACHE_GLOBAL); }
#endif
