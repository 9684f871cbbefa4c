/* graft.h — for libraries that graft loads into a running process (`graft inject`,
 * `graft patch … --library LIB --to NAME`).
 *
 * A replacement that calls the function it replaces declares where graft puts the original:
 *
 *     #include <graft.h>
 *     GRAFT_ORIGINAL(int, price, (int quantity));      // int (*graft_original_price)(int)
 *
 *     int fixed_price(int quantity) {
 *         int p = graft_original_price(quantity);        // the original price(), as it was
 *         return p < 0 ? 0 : p;
 *     }
 *
 * `graft patch -p PID price --library ./libfix.so --to fixed_price` relocates the instructions its
 * jump overwrites at the entry of price() into a trampoline, and writes the trampoline's address into
 * the data symbol graft_original_<TO> (here graft_original_fixed_price) before the jump goes live. The
 * macro's NAME is the --to function's name: GRAFT_ORIGINAL(int, fixed_price, (int)) declares
 * graft_original_fixed_price. Until graft writes it, the pointer is NULL.
 *
 * The symbol must be a writable, default-visibility pointer: the macro makes it one (and `used`, so
 * -O2 and --gc-sections keep it). graft refuses a --to whose graft_original_ symbol is anything else.
 */
#ifndef GRAFT_H
#define GRAFT_H

#define GRAFT_ORIGINAL(return_type, name, parameters)                                               \
    __attribute__((visibility("default"), used)) return_type(*volatile graft_original_##name) parameters = 0

#endif
