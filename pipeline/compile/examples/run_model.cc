// Load a pipeline artifact (model.so) with the TVM runtime and classify one input.
//
// Build against the headers and runtime shipped in the apache-tvm / apache-tvm-ffi wheels:
//   SP=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
//   g++ -std=c++17 run_model.cc -o run_model \
//     -I$SP/tvm_ffi/include -I$SP/tvm_ffi/3rdparty/dlpack/include \
//     -L$SP/tvm/lib -L$SP/tvm_ffi/lib -ltvm_runtime -ltvm_ffi \
//     -Wl,-rpath,$SP/tvm/lib -Wl,-rpath,$SP/tvm_ffi/lib
//   ./run_model ARTIFACT_DIR/model.so RESOLUTION NUM_CLASSES [input.f32]
// The input file holds 1x3xRxR float32 values, preprocessed as manifest.json says
// (RGB, x/255, minus mean, divided by std, NCHW); without it the input is all zeros.
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <vector>

// Host memory for the input tensor (the runtime allocates the output itself). TVM's
// kernels assume 64-byte aligned buffers (aligned vector loads): plain malloc crashes.
struct HostAlloc {
  void AllocData(DLTensor* t) {
    size_t bytes = (tvm::ffi::GetDataSize(*t) + 63) / 64 * 64;
    t->data = std::aligned_alloc(64, bytes);
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s model.so RESOLUTION NUM_CLASSES [input.f32]\n", argv[0]);
    return 2;
  }
  const int64_t r = std::atoll(argv[2]), classes = std::atoll(argv[3]);
  DLDevice cpu{kDLCPU, 0};
  DLDataType f32{kDLFloat, 32, 1};

  // The library holds a Relax VM executable: load it, then initialise the VM on the CPU
  // (device type, index, allocator 2 = pooled), as tvm.relax.VirtualMachine does.
  tvm::ffi::Module lib = tvm::ffi::Module::LoadFromFile(argv[1]);
  tvm::ffi::Module vm = lib->GetFunction("vm_load_executable").value()().cast<tvm::ffi::Module>();
  vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, 2);
  tvm::ffi::Function run = vm->GetFunction("main").value();

  std::vector<float> pixels(3 * r * r, 0.0f);
  if (argc > 4) {
    std::ifstream in(argv[4], std::ios::binary);
    in.read(reinterpret_cast<char*>(pixels.data()), pixels.size() * sizeof(float));
  }
  int64_t shape[4] = {1, 3, r, r};
  tvm::ffi::Tensor input = tvm::ffi::Tensor::FromNDAlloc(HostAlloc(), tvm::ffi::ShapeView(shape, 4), f32, cpu);
  std::memcpy(input.data_ptr(), pixels.data(), pixels.size() * sizeof(float));

  tvm::ffi::Tensor logits = run(input).cast<tvm::ffi::Tensor>();  // CPU tensor of 1 x classes
  const float* out = static_cast<const float*>(logits.data_ptr());
  int64_t best = 0;
  for (int64_t i = 0; i < classes; ++i) {
    std::printf("%s%.6g", i ? " " : "", out[i]);
    if (out[i] > out[best]) best = i;
  }
  std::printf("\nclass %lld\n", static_cast<long long>(best));
  return 0;
}
