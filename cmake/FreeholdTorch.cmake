# Locates LibTorch inside the pinned torch wheel (.venv, made by scripts/bootstrap.sh) and defines imported targets
# freehold::torch_cpu (torch_cpu + c10) and, when CUDA is on, freehold::torch_cuda (torch_cuda + c10_cuda + the CUDA
# runtime).
# We do not call find_package(Torch): its config probes CUDA and pulls in the whole libtorch even for CPU builds,
# while CPU builds here must link torch_cpu and c10 only.

set(FREEHOLD_TORCH_DIR "" CACHE PATH "The torch package directory (…/site-packages/torch); found from .venv when empty")

if(NOT FREEHOLD_TORCH_DIR)
  set(_python "${PROJECT_SOURCE_DIR}/.venv/bin/python")
  if(NOT EXISTS "${_python}")
    message(FATAL_ERROR "LibTorch not found: ${_python} does not exist. Run scripts/bootstrap.sh (or `make build`), "
                        "or pass -DFREEHOLD_TORCH_DIR=/path/to/site-packages/torch")
  endif()
  execute_process(
    COMMAND "${_python}" -c "import os, torch; print(os.path.dirname(torch.__file__)); print(torch.__version__)"
    OUTPUT_VARIABLE _torch_out RESULT_VARIABLE _torch_rc OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _torch_rc EQUAL 0)
    message(FATAL_ERROR "`${_python} -c 'import torch'` failed; rerun scripts/bootstrap.sh")
  endif()
  string(REPLACE "\n" ";" _torch_out "${_torch_out}")
  list(GET _torch_out 0 _torch_dir)
  list(GET _torch_out 1 _torch_version)
  set(FREEHOLD_TORCH_DIR "${_torch_dir}" CACHE PATH "" FORCE)
  message(STATUS "LibTorch ${_torch_version} from ${FREEHOLD_TORCH_DIR}")
endif()

foreach(_lib c10 torch_cpu)
  if(NOT EXISTS "${FREEHOLD_TORCH_DIR}/lib/lib${_lib}.so")
    message(FATAL_ERROR "${FREEHOLD_TORCH_DIR}/lib/lib${_lib}.so is missing; is FREEHOLD_TORCH_DIR a torch wheel?")
  endif()
endforeach()

add_library(freehold_torch_c10 SHARED IMPORTED GLOBAL)
set_target_properties(freehold_torch_c10 PROPERTIES IMPORTED_LOCATION "${FREEHOLD_TORCH_DIR}/lib/libc10.so")

add_library(freehold::torch_cpu INTERFACE IMPORTED GLOBAL)
add_library(freehold_torch_cpu_lib SHARED IMPORTED GLOBAL)
set_target_properties(freehold_torch_cpu_lib PROPERTIES IMPORTED_LOCATION "${FREEHOLD_TORCH_DIR}/lib/libtorch_cpu.so")
# The wheel is built with the new C++11 ABI; its headers are system headers so their warnings stay out of ours.
target_include_directories(freehold::torch_cpu SYSTEM INTERFACE
  "${FREEHOLD_TORCH_DIR}/include"
  "${FREEHOLD_TORCH_DIR}/include/torch/csrc/api/include")
target_compile_definitions(freehold::torch_cpu INTERFACE _GLIBCXX_USE_CXX11_ABI=1)
target_link_libraries(freehold::torch_cpu INTERFACE freehold_torch_cpu_lib freehold_torch_c10)
# The wheel is built with AT_PARALLEL_OPENMP, where at::parallel_for is an inline template around
# `#pragma omp parallel`: compiled without -fopenmp, every parallel_for in our kernels runs on one thread. With it,
# the pragmas call the wheel's own libgomp (the one libtorch_cpu loads, same soname), so a process has one OpenMP
# runtime and one thread pool, sized by at::set_num_threads. GCC only: clang (the fuzz build) would need libomp.
if(EXISTS "${FREEHOLD_TORCH_DIR}/lib/libgomp.so.1")
  target_compile_options(freehold::torch_cpu INTERFACE
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU>>:-fopenmp>)
  target_link_libraries(freehold::torch_cpu INTERFACE
    $<$<CXX_COMPILER_ID:GNU>:${FREEHOLD_TORCH_DIR}/lib/libgomp.so.1>)
endif()
# libtorch_cpu finds its own dependencies (gomp, …) through its RUNPATH; ours must find libtorch_cpu.
set(CMAKE_BUILD_RPATH "${FREEHOLD_TORCH_DIR}/lib" ${CMAKE_BUILD_RPATH})
set(CMAKE_INSTALL_RPATH "${FREEHOLD_TORCH_DIR}/lib" ${CMAKE_INSTALL_RPATH})

if(FREEHOLD_CUDA)
  foreach(_lib c10_cuda torch_cuda)
    if(NOT EXISTS "${FREEHOLD_TORCH_DIR}/lib/lib${_lib}.so")
      message(FATAL_ERROR "FREEHOLD_CUDA=ON but ${FREEHOLD_TORCH_DIR}/lib/lib${_lib}.so is missing (a CPU-only wheel?)")
    endif()
  endforeach()
  add_library(freehold_torch_c10_cuda SHARED IMPORTED GLOBAL)
  set_target_properties(freehold_torch_c10_cuda PROPERTIES IMPORTED_LOCATION "${FREEHOLD_TORCH_DIR}/lib/libc10_cuda.so")
  add_library(freehold_torch_cuda_lib SHARED IMPORTED GLOBAL)
  set_target_properties(freehold_torch_cuda_lib PROPERTIES IMPORTED_LOCATION "${FREEHOLD_TORCH_DIR}/lib/libtorch_cuda.so")

  # Link the CUDA runtime that libtorch_cuda itself loads (the wheel's nvidia/cu*/lib), so that a process has one
  # copy of it and our kernels share torch's streams and error state; the toolkit's when the wheel has none.
  cmake_path(SET _wheel_nvidia_dir NORMALIZE "${FREEHOLD_TORCH_DIR}/../nvidia")
  file(GLOB _wheel_cudart "${_wheel_nvidia_dir}/*/lib/libcudart.so.[0-9]*")
  if(_wheel_cudart)
    list(GET _wheel_cudart 0 _wheel_cudart)
    string(REGEX MATCH "[0-9]+$" _wheel_cuda_major "${_wheel_cudart}")
    if(NOT _wheel_cuda_major EQUAL CUDAToolkit_VERSION_MAJOR)
      message(FATAL_ERROR "The torch wheel is built for CUDA ${_wheel_cuda_major} (${_wheel_cudart}) but nvcc is CUDA "
                          "${CUDAToolkit_VERSION}. HINT: install the CUDA ${_wheel_cuda_major} toolkit and point "
                          "CMAKE_CUDA_COMPILER (or CUDACXX) at its nvcc.")
    endif()
    add_library(freehold_cudart SHARED IMPORTED GLOBAL)
    set_target_properties(freehold_cudart PROPERTIES IMPORTED_LOCATION "${_wheel_cudart}")
    target_include_directories(freehold_cudart SYSTEM INTERFACE ${CUDAToolkit_INCLUDE_DIRS})
    message(STATUS "CUDA runtime: ${_wheel_cudart}")
  else()
    add_library(freehold_cudart INTERFACE IMPORTED GLOBAL)
    target_link_libraries(freehold_cudart INTERFACE CUDA::cudart)
  endif()

  add_library(freehold::torch_cuda INTERFACE IMPORTED GLOBAL)
  target_link_libraries(freehold::torch_cuda INTERFACE freehold::torch_cpu freehold_torch_cuda_lib freehold_torch_c10_cuda
                        freehold_cudart)
  # Nothing references libtorch_cuda's symbols directly: it registers ATen's CUDA backend when loaded, so a linker
  # that drops unreferenced libraries (--as-needed, the default on Ubuntu) must keep it.
  target_link_options(freehold::torch_cuda INTERFACE "LINKER:--no-as-needed")
  target_compile_definitions(freehold::torch_cuda INTERFACE USE_C10D_NCCL FREEHOLD_WITH_CUDA=1)
endif()
