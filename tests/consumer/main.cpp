// The same header from C++.
#define MOEMLORA_IMPLEMENTATION
#include <moemlora.h>
#include <cstdio>

int main() {
    std::printf("consumer_cpp: kernels %s\n", mml_simd_isa_name());
    return 0;
}
