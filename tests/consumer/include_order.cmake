# The implementation compiles whatever the include order: tests that run the
# compiler on tests/consumer/include_order.c (system headers first, or the
# header first) in every C mode and as C++17, with -Wall -Wextra -Werror, with
# the configured compilers and the other of gcc/clang when installed; one
# strict c11 build is linked and run. Included from tests/CMakeLists.txt.
set(MML_ORDER_SRC ${CMAKE_CURRENT_LIST_DIR}/include_order.c)
set(MML_ORDER_FLAGS -Wall -Wextra -Werror -I${PROJECT_SOURCE_DIR})

# name;path pairs: the configured compiler, then the other family if present.
function(mml_order_compilers lang gnu clang out)
  if(CMAKE_${lang}_COMPILER_ID STREQUAL "Clang")
    set(list ${clang} ${CMAKE_${lang}_COMPILER})
    find_program(MML_ORDER_OTHER_${lang} ${gnu})
    set(other ${gnu})
  else()
    set(list ${gnu} ${CMAKE_${lang}_COMPILER})
    find_program(MML_ORDER_OTHER_${lang} ${clang})
    set(other ${clang})
  endif()
  if(MML_ORDER_OTHER_${lang})
    list(APPEND list ${other} ${MML_ORDER_OTHER_${lang}})
  endif()
  set(${out} ${list} PARENT_SCOPE)
endfunction()

function(mml_order_tests lang gnu clang stds lang_flags)
  mml_order_compilers(${lang} ${gnu} ${clang} compilers)
  list(LENGTH compilers n)
  math(EXPR last "${n} - 1")
  foreach(i RANGE 0 ${last} 2)
    math(EXPR j "${i} + 1")
    list(GET compilers ${i} name)
    list(GET compilers ${j} exe)
    foreach(std ${stds})
      foreach(order system_first header_first)
        set(def)
        if(order STREQUAL "header_first")
          set(def -DMML_CONSUMER_HEADER_FIRST)
        endif()
        string(REPLACE "+" "x" tname "include_order_${name}_${std}_${order}")
        add_test(NAME ${tname}
                 COMMAND ${exe} ${lang_flags} -std=${std} ${MML_ORDER_FLAGS} ${def} -fsyntax-only ${MML_ORDER_SRC})
      endforeach()
    endforeach()
  endforeach()
endfunction()

mml_order_tests(C gcc clang "c11;c17;gnu11;gnu17" "")
mml_order_tests(CXX g++ clang++ "c++17" "-x;c++")

# Linked and run: the declarations the implementation supplies itself in
# strict modes must be the ones the C library defines.
set(MML_ORDER_RUN_DIR ${CMAKE_CURRENT_BINARY_DIR}/include_order_run)
add_test(NAME include_order_c11_run
         COMMAND ${CMAKE_COMMAND} -DCC=${CMAKE_C_COMPILER} "-DFLAGS=-std=c11;-O0;${MML_ORDER_FLAGS}"
                 -DSRC=${MML_ORDER_SRC} -DDIR=${MML_ORDER_RUN_DIR} "-DLIBS=${SLEEF_LINK_LIBRARIES};-lpthread;-lm"
                 -P ${CMAKE_CURRENT_LIST_DIR}/compile_and_run.cmake)
