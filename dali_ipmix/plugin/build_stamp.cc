// The build stamp: the DALI release and CUDA major this library was compiled against, and whether it
// holds the GPU operator. DALI has no stable plugin ABI, so dali_ipmix.native reads this string from
// the file (without loading it) and refuses a library built for another DALI with a rebuild hint.
// Format: "dali-ipmix-build-stamp:dali=<version>;cuda=<DALI's CUDA major>;gpu=<0, or the CUDA major the
// GPU operator was compiled with>;" then a NUL.
#ifndef IPMIX_STAMP_DALI
#error "IPMIX_STAMP_DALI, IPMIX_STAMP_CUDA and IPMIX_STAMP_GPU are set by CMakeLists.txt"
#endif

extern "C" __attribute__((used, visibility("default"))) const char dali_ipmix_build_stamp[] =
    "dali-ipmix-build-stamp:dali=" IPMIX_STAMP_DALI ";cuda=" IPMIX_STAMP_CUDA ";gpu=" IPMIX_STAMP_GPU ";";
