# Every target of ours gets the same strict warning set; third-party headers are SYSTEM includes.
add_library(nerava_warnings INTERFACE)
target_compile_options(nerava_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast -Wcast-align
  -Woverloaded-virtual -Wimplicit-fallthrough -Wno-unused-parameter
  # GCC 12 misreports Asio's coroutine frame allocator as a new/delete mismatch.
  $<$<CXX_COMPILER_ID:GNU>:-Wno-mismatched-new-delete>)
if(NERAVA_WERROR)
  target_compile_options(nerava_warnings INTERFACE -Werror)
endif()

if(NERAVA_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=address,undefined)
endif()

if(NERAVA_FUZZ)
  # Instrument everything (the codecs above all) so that libFuzzer sees their coverage.
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined)
endif()
