# cmake -DCC=compiler -DFLAGS=a;b -DSRC=file.c -DDIR=workdir -DLIBS=x;y -P compile_and_run.cmake
# Compiles SRC into DIR/prog and runs "DIR/prog DIR"; any failure fails the test.
file(REMOVE_RECURSE ${DIR})
file(MAKE_DIRECTORY ${DIR})
execute_process(COMMAND ${CC} ${FLAGS} ${SRC} -o ${DIR}/prog ${LIBS} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "compiling ${SRC} failed (${rc})")
endif()
execute_process(COMMAND ${DIR}/prog ${DIR} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${DIR}/prog failed (${rc})")
endif()
