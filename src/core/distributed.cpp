// The launch variables, the store and the Gloo process group (include/can/distributed.h).
// The wheel's LibTorch ships c10d's headers but not Gloo's, which ProcessGroupGloo.hpp
// includes: they come from Debian's libgloo-dev (headers only; every Gloo object is
// made inside libtorch_cpu, through ProcessGroupGloo's own factories, so CAN never
// depends on the layout of Gloo's types). CMakeLists.txt defines USE_C10D_GLOO.
#include "can/distributed.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <ATen/ATen.h>

#include <charconv>
#include <limits>

#include "can/error.h"

namespace can {

namespace {

constexpr const char* kLaunchVariables[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"};

int integer_variable(const char* name, const char* value, int low, int high) {
  int parsed = 0;
  const char* end = value + std::char_traits<char>::length(value);
  const auto [stop, error] = std::from_chars(value, end, parsed);
  check(error == std::errc() && stop == end && parsed >= low && parsed <= high,
        "the launch variable {}='{}' is not a whole number in [{}, {}]", name, value, low, high);
  return parsed;
}

// Runs a c10d call; its c10::Error (a timeout, a peer gone) becomes a can::Error saying
// what this rank was doing.
template <typename Action>
auto collective(const std::string& what, int rank, Action&& action) {
  try {
    return action();
  } catch (const c10::Error& error) {
    fail("rank {}: {} failed: {}", rank, what, error.what_without_backtrace());
  }
}

}  // namespace

LaunchEnvironment read_launch_environment(const std::function<const char*(const char*)>& getenv) {
  std::string set, missing;
  for (const char* name : kLaunchVariables) {
    const char* value = getenv(name);
    std::string& list = value != nullptr && *value != '\0' ? set : missing;
    list += (list.empty() ? "" : ", ") + std::string(name);
  }
  LaunchEnvironment launch;
  if (set.empty()) return launch;
  check(missing.empty(),
        "the launch variables are set only in part ({} set; {} missing): torchrun sets all five, and a scheduler "
        "or a shell that starts the processes must set them all",
        set, missing);
  launch.world_size = integer_variable("WORLD_SIZE", getenv("WORLD_SIZE"), 1, std::numeric_limits<int>::max());
  launch.rank = integer_variable("RANK", getenv("RANK"), 0, launch.world_size - 1);
  launch.local_rank = integer_variable("LOCAL_RANK", getenv("LOCAL_RANK"), 0, launch.world_size - 1);
  launch.master_addr = getenv("MASTER_ADDR");
  launch.master_port = integer_variable("MASTER_PORT", getenv("MASTER_PORT"), 1, 65535);
  if (const char* agent = getenv("TORCHELASTIC_USE_AGENT_STORE"); agent != nullptr && *agent != '\0') {
    const std::string value = agent;
    check(value == "True" || value == "False", "the launch variable TORCHELASTIC_USE_AGENT_STORE='{}' is not True or "
          "False", value);
    launch.agent_store = value == "True";
  }
  return launch;
}

struct ProcessGroup::State {
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
  int rank, world_size;
};

ProcessGroup::ProcessGroup(std::unique_ptr<State> state) : state_(std::move(state)) {}
ProcessGroup::~ProcessGroup() = default;
ProcessGroup::ProcessGroup(ProcessGroup&&) noexcept = default;
ProcessGroup& ProcessGroup::operator=(ProcessGroup&&) noexcept = default;

ProcessGroup ProcessGroup::join(const LaunchEnvironment& launch, std::chrono::milliseconds timeout) {
  const int rank = launch.rank;
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(launch.master_port);
  options.isServer = rank == 0 && !launch.agent_store;
  // Every rank names the job's size: a client counts itself in only when it does, and
  // the server waits for that count.
  options.numWorkers = static_cast<size_t>(launch.world_size);
  options.timeout = timeout;
  const std::string where = fmt::format("the store at {}:{}", launch.master_addr, launch.master_port);
  auto store = collective("joining " + where, rank, [&] {
    return c10::make_intrusive<c10d::TCPStore>(launch.master_addr, options);
  });
  // Keys of CAN's own under the agent's store, which holds the agent's rendezvous too.
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("can", store);
  auto group = collective("creating the Gloo process group through " + where, rank, [&] {
    return c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, launch.world_size,
                                                       c10d::ProcessGroupGloo::Options::create_default(timeout));
  });
  return ProcessGroup(std::make_unique<State>(State{std::move(group), rank, launch.world_size}));
}

int ProcessGroup::rank() const { return state_->rank; }
int ProcessGroup::world_size() const { return state_->world_size; }

void ProcessGroup::all_reduce_sum(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes) const {
  const auto reduce = [&](at::Tensor flat) {  // flat: [n], contiguous
    std::vector<at::Tensor> one = {flat};
    collective("all-reduce", rank(), [&] { state_->group->allreduce(one)->wait(); });
  };
  size_t begin = 0;
  while (begin < tensors.size()) {
    // The bucket: tensors [begin, end) of one dtype, at most bucket_bytes together (at least one).
    size_t end = begin + 1;
    int64_t bytes = tensors[begin].nbytes();
    while (end < tensors.size() && tensors[end].scalar_type() == tensors[begin].scalar_type() &&
           bytes + static_cast<int64_t>(tensors[end].nbytes()) <= bucket_bytes) {
      bytes += tensors[end].nbytes();
      ++end;
    }
    std::vector<at::Tensor> flats;
    for (size_t i = begin; i < end; ++i) flats.push_back(tensors[i].reshape({-1}));
    const at::Tensor bucket = at::cat(flats);  // [Σ numel]
    reduce(bucket);
    int64_t offset = 0;
    for (size_t i = begin; i < end; ++i) {
      const int64_t count = tensors[i].numel();
      tensors[i].copy_(bucket.narrow(0, offset, count).view(tensors[i].sizes()));
      offset += count;
    }
    begin = end;
  }
}

void ProcessGroup::broadcast(const std::vector<at::Tensor>& tensors, int root) const {
  check(root >= 0 && root < world_size(), "broadcast from rank {}, outside [0, {})", root, world_size());
  for (const at::Tensor& tensor : tensors) {
    at::Tensor contiguous = tensor.contiguous();
    std::vector<at::Tensor> one = {contiguous};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    collective("broadcast", rank(), [&] { state_->group->broadcast(one, options)->wait(); });
    if (!contiguous.is_same(tensor)) tensor.copy_(contiguous);
  }
}

void ProcessGroup::barrier() const {
  collective("barrier", rank(), [&] { state_->group->barrier()->wait(); });
}

}  // namespace can
