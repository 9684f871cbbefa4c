# inject_gdb.py: gdb's way of making a running process call a library's replacement, for bench/inject.sh.
#
#   LIB=/abs/lib.so FUNC=price TO=fixed_price gdb -q -nx -batch -iex 'set debuginfod enabled off' -p PID -x inject_gdb.py
#
# With every thread stopped (gdb's all-stop attach): `call (void*)dlopen(LIB, RTLD_NOW)`, then TO's
# address (`&TO`, gdb has read the new library's symbols at the dlopen; dlsym(handle, TO) if that fails),
# then the 14-byte `jmp [rip+0]; .quad TO` written over FUNC's entry -- after single-stepping any thread
# whose pc is strictly inside those 14 bytes out of them, as the anchors' gdb_patch.py does (a write over
# a half-executed instruction gave SIGILL there). gdb builds no trampoline: TO must not call the original
# (bench/libfix_plain.c). Detaches when the script ends (-batch). Prints one line:
#   GDBINJECT handle=0x... func=0x... to=0x... stepped_out=N
import os
import struct

import gdb

lib, func_name, to_name = os.environ["LIB"], os.environ["FUNC"], os.environ["TO"]
gdb.execute("set confirm off")
handle = int(gdb.parse_and_eval('(void *)dlopen("%s", 2)' % lib))
if handle == 0:
    raise gdb.GdbError("dlopen(%s) returned NULL" % lib)
func = int(gdb.parse_and_eval("(long)&%s" % func_name))
try:
    to = int(gdb.parse_and_eval("(long)&%s" % to_name))
except gdb.error:
    to = int(gdb.parse_and_eval('(long)dlsym(%d, "%s")' % (handle, to_name)))
patch = bytes.fromhex("ff2500000000") + struct.pack("<Q", to)
stepped = 0
inferior = gdb.selected_inferior()
for thread in inferior.threads():
    thread.switch()
    for _ in range(64):
        pc = int(gdb.parse_and_eval("$pc"))
        if not (func < pc < func + len(patch)):
            break
        gdb.execute("stepi", to_string=True)
        stepped += 1
inferior.write_memory(func, patch)
print("GDBINJECT handle=0x%x func=0x%x to=0x%x stepped_out=%d" % (handle, func, to, stepped))
