"""The real training side of a worker slot: workers.train on the slot's device, data cached."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from search_space.contract import DatasetConfig, TrialConfig
from service.settings import Settings
from workers.options import SlotOptions
from workers.training import DataMissing, Stop, Training

DATA_CACHE_SIZE = 2  # decoded datasets kept per process (each may also hold a GPU copy)


class TorchTraining(Training):
    """workers.train / workers.data / search_space.curves on one device, data cached per process."""

    def __init__(
        self, settings: Settings, options: SlotOptions, *, act_factory: Any = None
    ) -> None:
        import torch  # only the training side pays for torch

        if options.threads:
            torch.set_num_threads(options.threads)
        self.settings = settings
        self.device = torch.device("cuda:0" if options.device == "cuda" else "cpu")
        self._data: OrderedDict[str, Any] = OrderedDict()
        self.act_factory = act_factory  # replaces the config's activations (tests only)
        self._costs: Any = None  # workers.cost.CostMeter, made at the first cost measured

    def device_description(self, gpu_label: str) -> str:
        """cuda:<physical id> (<name>) or cpu."""
        if self.device.type != "cuda":
            return "cpu"
        import torch

        return f"cuda:{gpu_label or 0} ({torch.cuda.get_device_name(self.device)})"

    def load_data(self, dataset: DatasetConfig) -> Any:
        """Decoded once per process per dataset config (then kept, also on the device)."""
        from workers.data import DataUnavailableError, load_dataset

        key = dataset.model_dump_json()
        if key in self._data:
            self._data.move_to_end(key)
        else:
            while len(self._data) >= DATA_CACHE_SIZE:
                self._data.popitem(last=False)  # a dataset (and its GPU copy) no study uses now
            try:
                self._data[key] = load_dataset(
                    dataset.model_dump(mode="json"),
                    data=self.settings.data,
                    cache_dir=self.settings.resolved_cache_dir,
                    download=self.settings.download,
                )
            except DataUnavailableError as error:
                raise DataMissing(str(error)) from error
        return self._data[key]

    def identity(self, data: Any) -> tuple[str, str]:
        """The decoded data's checksum; the training sources, torch release and device kind."""
        import torch

        from workers.code_version import code_version

        return str(data.checksum), code_version(torch.__version__, self.device.type)

    def prescreen(self, config: TrialConfig) -> tuple[bool, str | None]:
        """search_space.curves.prescreen on the config's activation."""
        from search_space.curves import prescreen

        result = prescreen(config.activation)
        return bool(result.ok), result.reason

    def measure_cost(
        self, kind: str, config: TrialConfig, data: Any, record: dict[str, Any]
    ) -> dict[str, Any]:
        """workers.cost on this slot's device (its ReLU references kept for the process)."""
        from workers.cost import CostMeter

        if self._costs is None:
            self._costs = CostMeter(self.device)
        return dict(self._costs.measure(kind, config, data, record).to_json())

    def train(
        self,
        config: TrialConfig,
        data: Any,
        on_epoch: Callable[[Any], None],
        should_stop: Callable[[], bool],
        on_step: Callable[[int, int, int], None] | None = None,
    ) -> Any:
        """workers.train.train_trial on this slot's device."""
        from workers.failures import TrialCancelled
        from workers.train import train_trial

        def epoch_callback(report: Any) -> None:
            try:
                on_epoch(report)
            except Stop as stop:
                raise TrialCancelled(stop.reason) from stop

        try:
            return train_trial(
                config,
                data,
                self.device,
                on_epoch=epoch_callback,
                should_stop=should_stop,
                on_step=on_step,
                act_factory=self.act_factory() if self.act_factory else None,
            )
        except TrialCancelled as cancelled:
            cause = cancelled.__cause__
            # should_stop() said yes (a second signal): hand the run back.
            raise cause if isinstance(cause, Stop) else Stop("handed_back") from cancelled
