# embed.cmake: turns the dashboard's files (ui/) into a C source file, so
# that the binary serves them with nothing on disk (an air-gapped host, a
# scratch container). Run by the build: cmake -DOUT=file.c -DFILES="a;b"
# -DNAMES="x;y" -P embed.cmake. Each file becomes a byte array and an
# entry {name, bytes, length} of px_ui_assets.
list(LENGTH FILES n)
math(EXPR last "${n} - 1")
set(body "/* Generated from ui/ by cmake/embed.cmake; do not edit. */\n#include \"proxy/ui.h\"\n\n")
set(table "const px_ui_asset_t px_ui_assets[] = {\n")
foreach(i RANGE ${last})
  list(GET FILES ${i} f)
  list(GET NAMES ${i} name)
  file(READ "${f}" hex HEX)
  string(LENGTH "${hex}" hexlen)
  math(EXPR len "${hexlen} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
  string(APPEND body "static const unsigned char asset_${i}[] = {\n${bytes}0};\n")
  string(APPEND table "  {\"${name}\", asset_${i}, ${len}},\n")
endforeach()
string(APPEND table "  {0, 0, 0},\n};\n")
file(WRITE "${OUT}.tmp" "${body}\n${table}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
