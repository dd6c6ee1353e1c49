// The launch variables, the store and the Gloo process group (include/can/distributed.h).
// The wheel's LibTorch ships c10d's headers but not Gloo's, which ProcessGroupGloo.hpp
// includes: they come from Debian's libgloo-dev (headers only; every Gloo object is
// made inside libtorch_cpu, through ProcessGroupGloo's own factories, so CAN never
// depends on the layout of Gloo's types). CMakeLists.txt defines USE_C10D_GLOO.
#include "can/distributed.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <ATen/ATen.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <csignal>
#include <fstream>
#include <cstring>
#include <limits>
#include <thread>

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

// Runs a c10d call; what it throws (c10's errors: a timeout; Gloo's: a peer's connection
// closed) becomes a can::Error saying what this rank was doing, and `ended()` (when
// given) which of the other ranks are known to have ended.
template <typename Action>
auto collective(const std::string& what, int rank, Action&& action,
                const std::function<std::string()>& ended = nullptr) {
  try {
    return action();
  } catch (const c10::Error& error) {
    fail("rank {}: {} failed{}: {}", rank, what, ended ? ended() : "", error.what_without_backtrace());
  } catch (const std::exception& error) {
    const std::string known = ended ? ended() : "";
    fail("rank {}: {} failed{}: {}", rank, what,
         known.empty() ? " (another rank of the job failed, was killed or stopped answering; its own messages say "
                         "which)"
                       : known,
         error.what());
  }
}

std::string host_name() {
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  return name;
}

// Whether process `pid` of this machine has ended: gone, or a zombie not yet reaped.
bool process_ended(int64_t pid) {
  if (::kill(static_cast<pid_t>(pid), 0) != 0) return errno == ESRCH;
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  std::string line;
  std::getline(stat, line);
  const size_t close = line.rfind(')');  // "pid (name) state ..."
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
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
  c10::intrusive_ptr<c10d::Backend> gloo;  // CPU tensors: every job's small messages, and a CPU job's all
  c10::intrusive_ptr<c10d::Backend> nccl;  // CUDA tensors, in a job on GPUs; null otherwise
  int rank, world_size;
  std::vector<std::string> hosts;  // [world] each rank's machine and process id, exchanged when joining
  std::vector<int64_t> pids;

  // " (rank 1, process 4242 on this machine, has ended)" for the ranks on this machine
  // whose processes have ended; "" when none is known to have (other machines' are not seen).
  // A process being killed closes its sockets before it becomes a zombie, so its peers may
  // see the failure first: with peers on this machine, look again for up to half a second.
  std::string ended_ranks() const {
    const std::string here = host_name();
    bool peers_here = false;
    for (int r = 0; r < world_size; ++r) peers_here = peers_here || (r != rank && hosts[r] == here);
    for (int look = 0;; ++look) {
      std::string ended;
      for (int r = 0; r < world_size; ++r) {
        if (r == rank || hosts[r] != here || !process_ended(pids[r])) continue;
        ended += fmt::format("{}rank {}, process {} on this machine", ended.empty() ? "" : "; ", r, pids[r]);
      }
      if (!ended.empty()) return " (" + ended + ", has ended)";
      if (!peers_here || look == 10) return "";
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  std::function<std::string()> ended_ranks_of_peers() const {
    return [this] { return ended_ranks(); };
  }

  // The backend of the tensors' device.
  c10d::Backend& of(const at::Tensor& tensor) const {
    if (!tensor.is_cuda()) return *gloo;
    check(nccl, "rank {}: a collective on a CUDA tensor in a job without NCCL", rank);
    return *nccl;
  }
};

ProcessGroup::ProcessGroup(std::unique_ptr<State> state) : state_(std::move(state)) {}
ProcessGroup::~ProcessGroup() = default;
ProcessGroup::ProcessGroup(ProcessGroup&&) noexcept = default;
ProcessGroup& ProcessGroup::operator=(ProcessGroup&&) noexcept = default;

ProcessGroup ProcessGroup::join(const LaunchEnvironment& launch, std::chrono::milliseconds timeout, bool gpus) {
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
  auto state = std::make_unique<State>();
  state->rank = rank;
  state->world_size = launch.world_size;
  state->gloo = collective("creating the Gloo process group through " + where, rank, [&] {
    return c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, launch.world_size,
                                                       c10d::ProcessGroupGloo::Options::create_default(timeout));
  });
  // Each rank's machine and process, so that a rank can tell which of its peers ended.
  collective("exchanging the ranks' processes through " + where, rank, [&] {
    const std::string mine = fmt::format("{} {}", host_name(), static_cast<long>(::getpid()));
    prefixed->set(fmt::format("process/{}", rank), std::vector<uint8_t>(mine.begin(), mine.end()));
    for (int r = 0; r < launch.world_size; ++r) {
      const std::vector<uint8_t> value = prefixed->get(fmt::format("process/{}", r));
      const std::string text(value.begin(), value.end());
      const size_t space = text.rfind(' ');
      state->hosts.push_back(text.substr(0, space));
      state->pids.push_back(std::stoll(text.substr(space + 1)));
    }
  });
  if (gpus) {
#ifdef USE_C10D_NCCL
    auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
    nccl_options->timeout = timeout;
    auto nccl_store = c10::make_intrusive<c10d::PrefixStore>("can-nccl", store);
    state->nccl = collective("creating the NCCL process group through " + where, rank, [&] {
      return c10::make_intrusive<c10d::ProcessGroupNCCL>(nccl_store, rank, launch.world_size, nccl_options);
    });
#else
    fail("rank {}: a job on GPUs needs NCCL, and this CAN was built without it (nccl.h was not found when it was "
         "configured; CMakeLists.txt looks in the PyTorch wheel's nvidia/ folders)",
         rank);
#endif
  }
  return ProcessGroup(std::move(state));
}

int ProcessGroup::rank() const { return state_->rank; }
int ProcessGroup::world_size() const { return state_->world_size; }

namespace {

// Packs `tensors` into buckets (tensors of one dtype and device, at most bucket_bytes
// together, at least one), runs `collective` on each bucket, flat, and copies its values back.
void in_buckets(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes,
                const std::function<void(std::vector<at::Tensor>& flat)>& collective) {
  for (const auto& [begin, end] : bucket_ranges(tensors, bucket_bytes)) {
    std::vector<at::Tensor> flats;
    for (size_t i = begin; i < end; ++i) flats.push_back(tensors[i].reshape({-1}));
    std::vector<at::Tensor> bucket = {at::cat(flats)};  // [Σ numel]
    collective(bucket);
    int64_t offset = 0;
    for (size_t i = begin; i < end; ++i) {
      const int64_t count = tensors[i].numel();
      tensors[i].copy_(bucket[0].narrow(0, offset, count).view(tensors[i].sizes()));
      offset += count;
    }
  }
}

}  // namespace

std::vector<std::pair<size_t, size_t>> bucket_ranges(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  std::vector<std::pair<size_t, size_t>> ranges;
  size_t begin = 0;
  while (begin < tensors.size()) {
    size_t end = begin + 1;
    int64_t bytes = static_cast<int64_t>(tensors[begin].nbytes());
    while (end < tensors.size() && tensors[end].scalar_type() == tensors[begin].scalar_type() &&
           tensors[end].device() == tensors[begin].device() &&
           bytes + static_cast<int64_t>(tensors[end].nbytes()) <= bucket_bytes) {
      bytes += static_cast<int64_t>(tensors[end].nbytes());
      ++end;
    }
    ranges.emplace_back(begin, end);
    begin = end;
  }
  return ranges;
}

void ProcessGroup::all_reduce_sum(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes) const {
  in_buckets(tensors, bucket_bytes, [&](std::vector<at::Tensor>& bucket) {
    collective("all-reduce", rank(), [&] { state_->of(bucket[0]).allreduce(bucket)->wait(); }, state_->ended_ranks_of_peers());
  });
}

std::function<void()> ProcessGroup::start_all_reduce_sum(const at::Tensor& flat) const {
  check(flat.is_contiguous(), "rank {}: start_all_reduce_sum needs a contiguous tensor", rank());
  std::vector<at::Tensor> one = {flat};
  auto work = collective("all-reduce", rank(), [&] { return state_->of(flat).allreduce(one); },
                         state_->ended_ranks_of_peers());
  return [this, work] {
    collective("all-reduce", rank(), [&] { work->wait(); }, state_->ended_ranks_of_peers());
  };
}

void ProcessGroup::reduce_sum(const std::vector<at::Tensor>& tensors, int root, int64_t bucket_bytes) const {
  check(root >= 0 && root < world_size(), "reduce onto rank {}, outside [0, {})", root, world_size());
  c10d::ReduceOptions options;
  options.rootRank = root;
  in_buckets(tensors, bucket_bytes, [&](std::vector<at::Tensor>& bucket) {
    collective("reduce", rank(), [&] { state_->of(bucket[0]).reduce(bucket, options)->wait(); }, state_->ended_ranks_of_peers());
  });
}

void ProcessGroup::broadcast(const std::vector<at::Tensor>& tensors, int root) const {
  check(root >= 0 && root < world_size(), "broadcast from rank {}, outside [0, {})", root, world_size());
  for (const at::Tensor& tensor : tensors) {
    at::Tensor contiguous = tensor.contiguous();
    std::vector<at::Tensor> one = {contiguous};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    collective("broadcast", rank(), [&] { state_->of(one[0]).broadcast(one, options)->wait(); }, state_->ended_ranks_of_peers());
    if (!contiguous.is_same(tensor)) tensor.copy_(contiguous);
  }
}

void ProcessGroup::barrier() const {
  collective("barrier", rank(), [&] { state_->gloo->barrier()->wait(); }, state_->ended_ranks_of_peers());
}

std::vector<std::string> ProcessGroup::all_gather_bytes(const std::string& bytes) const {
  const int world = world_size();
  // The sizes first, then every rank's bytes padded to the largest (Gloo's all-gather
  // needs equal sizes).
  std::vector<at::Tensor> size_in = {at::tensor({static_cast<int64_t>(bytes.size())}, at::kLong)};
  std::vector<std::vector<at::Tensor>> size_out(1);
  for (int r = 0; r < world; ++r) size_out[0].push_back(at::empty({1}, at::kLong));
  collective("all-gather of sizes", rank(), [&] { state_->gloo->allgather(size_out, size_in)->wait(); }, state_->ended_ranks_of_peers());
  int64_t longest = 1;
  for (const at::Tensor& size : size_out[0]) longest = std::max(longest, size.item<int64_t>());
  std::vector<at::Tensor> in = {at::zeros({longest}, at::kByte)};
  std::memcpy(in[0].data_ptr(), bytes.data(), bytes.size());
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < world; ++r) out[0].push_back(at::empty({longest}, at::kByte));
  collective("all-gather", rank(), [&] { state_->gloo->allgather(out, in)->wait(); }, state_->ended_ranks_of_peers());
  std::vector<std::string> gathered;
  for (int r = 0; r < world; ++r) {
    gathered.emplace_back(static_cast<const char*>(out[0][r].data_ptr()),
                          static_cast<size_t>(size_out[0][r].item<int64_t>()));
  }
  return gathered;
}

std::string ProcessGroup::broadcast_bytes(const std::string& bytes, int root) const {
  at::Tensor size = at::tensor({static_cast<int64_t>(bytes.size())}, at::kLong);
  broadcast({size}, root);
  at::Tensor data = at::zeros({std::max<int64_t>(1, size.item<int64_t>())}, at::kByte);
  if (rank() == root) std::memcpy(data.data_ptr(), bytes.data(), bytes.size());
  broadcast({data}, root);
  return std::string(static_cast<const char*>(data.data_ptr()), static_cast<size_t>(size.item<int64_t>()));
}

std::vector<std::vector<double>> run_sharded(const ProcessGroup* group, int64_t units,
                                             const std::function<std::vector<double>(int64_t unit)>& compute) {
  std::vector<std::vector<double>> results(static_cast<size_t>(units));
  if (group == nullptr) {
    for (int64_t unit = 0; unit < units; ++unit) results[unit] = compute(unit);
    return results;
  }
  const int rank = group->rank(), world = group->world_size();
  // This rank's units in order, each as its length and then its values.
  std::vector<double> mine;
  for (int64_t unit = rank; unit < units; unit += world) {
    const std::vector<double> result = compute(unit);
    mine.push_back(static_cast<double>(result.size()));
    mine.insert(mine.end(), result.begin(), result.end());
  }
  std::string bytes;  // (mine.data() may be null when it is empty)
  if (!mine.empty()) bytes.assign(reinterpret_cast<const char*>(mine.data()), mine.size() * sizeof(double));
  const std::vector<std::string> gathered = group->all_gather_bytes(bytes);
  for (int r = 0; r < world; ++r) {
    std::vector<double> values(gathered[r].size() / sizeof(double));
    if (!values.empty()) std::memcpy(values.data(), gathered[r].data(), values.size() * sizeof(double));
    size_t next = 0;
    for (int64_t unit = r; unit < units; unit += world) {
      check(next < values.size(), "rank {}: rank {} sent fewer results than units", rank, r);
      const auto length = static_cast<size_t>(values[next++]);
      check(next + length <= values.size(), "rank {}: rank {} sent a truncated result", rank, r);
      results[unit].assign(values.begin() + static_cast<int64_t>(next), values.begin() + static_cast<int64_t>(next + length));
      next += length;
    }
  }
  return results;
}

}  // namespace can
