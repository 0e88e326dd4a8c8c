// RECIS_HD marks functions compiled for both the host and CUDA devices: one body serves the
// C++ kernels, the CUDA kernels and the CPU tests that drive the device bodies from threads.
#pragma once

#if defined(__CUDACC__)
#define RECIS_HD __host__ __device__
#else
#define RECIS_HD
#endif
