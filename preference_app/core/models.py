"""The data of the RLHF loop: prompts and conversations, generated candidates, pairwise
comparisons and the human judgments of them, model versions and training rounds.

Models hold data and constraints only; every write goes through `services.py`.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Prompt(models.Model):
    class Source(models.TextChoices):
        BUILTIN = "builtin", "Built-in"
        IMPORTED = "imported", "Imported"
        ANNOTATOR = "annotator", "Written by an annotator"

    text = models.TextField()
    # SHA-256 of the text, so imports can skip duplicates with one indexed look-up.
    text_sha256 = models.CharField(max_length=64, unique=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    tags = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.text[:80]


class EvaluationSet(models.Model):
    """A frozen, versioned list of prompts that policies are judged on and never trained on.

    Its texts are stored in the row itself, so later edits or deletions of Prompt rows cannot change
    what a round was evaluated on; `content_sha256` identifies the exact list and is recorded on
    every round that used it. No row is ever updated after it is created: a different list is a new
    version, and the prompts of every version stay out of training for good.
    """

    name = models.CharField(max_length=120)
    version = models.PositiveIntegerField(unique=True)
    prompts = models.JSONField()  # The prompt texts, in order.
    prompt_sha256s = models.JSONField()  # SHA-256 of each text, as Prompt.text_sha256 computes it.
    content_sha256 = models.CharField(max_length=64, unique=True)  # Of the canonical JSON of `prompts`.
    is_active = models.BooleanField(default=False)  # The set new rounds are evaluated on.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="one_active_evaluation_set")
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version} ({len(self.prompts)} prompts, {self.content_sha256[:12]})"


class Conversation(models.Model):
    """A multi-turn context. Comparisons sit at a turn of it: the turns before that are their context."""

    class Source(models.TextChoices):
        PROMPT = "prompt", "From a prompt"
        LIVE_CHAT = "live_chat", "Live chat"
        IMPORTED = "imported", "Imported"
        EVALUATION = "evaluation", "From the frozen evaluation set"

    prompt = models.ForeignKey(Prompt, null=True, blank=True, on_delete=models.PROTECT, related_name="conversations")
    source = models.CharField(max_length=16, choices=Source.choices)
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="conversations"
    )
    overall_rating = models.PositiveSmallIntegerField(null=True, blank=True)  # 1 (bad) to 4 (good), live chat only.
    comment = models.TextField(blank=True)
    ended = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # The queue leaves out comparisons of live chats still in progress on every lease and
            # page view. This index holds only those few chats, so the check costs the same however
            # many finished conversations accumulate (without it, a scan of the whole table).
            models.Index(
                fields=["id"],
                condition=Q(source="live_chat", ended__isnull=True),
                name="conversation_chat_in_progress",
            )
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(overall_rating__isnull=True) | Q(overall_rating__gte=1, overall_rating__lte=4),
                name="conversation_rating_1_to_4",
            )
        ]

    def __str__(self) -> str:
        return f"Conversation {self.pk}"


class Turn(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system", "System"
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="turns")
    index = models.PositiveIntegerField()
    role = models.CharField(max_length=16, choices=Role.choices)
    text = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["conversation", "index"]
        constraints = [models.UniqueConstraint(fields=["conversation", "index"], name="turn_unique_index")]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:60]}"


class TrainingRound(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        GENERATING = "generating", "Generating candidates"
        COLLECTING = "collecting", "Collecting judgments"
        TRAINING_REWARD = "training_reward", "Training the reward model"
        TRAINING_POLICY = "training_policy", "Training the policy"
        EVALUATING = "evaluating", "Evaluating"
        AWAITING_VERDICT = "awaiting_verdict", "Awaiting the human verdict"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    number = models.PositiveIntegerField(unique=True)
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.PENDING)
    config = models.JSONField(default=dict, blank=True)
    step = models.CharField(max_length=200, blank=True)  # What the current status is doing, in words.
    progress = models.FloatField(default=0.0)  # Fraction of the current step done, 0 to 1.
    metrics = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    # The step a failed round stopped at, so a retry resumes there instead of starting over.
    failed_status = models.CharField(max_length=24, choices=Status.choices, blank=True)
    # Set while a worker runs the current step; a second delivery of the same task finds it set.
    step_claimed = models.DateTimeField(null=True, blank=True)
    # The process holding the claim (core.claims), so a redelivery can tell its holder is dead.
    step_claimed_by = models.CharField(max_length=200, blank=True)
    # When the current step's task was last sent; the sweeper sends it again if it is never claimed.
    step_queued = models.DateTimeField(null=True, blank=True)
    # How many times the current step was claimed; a step that keeps killing its worker is failed.
    step_attempts = models.PositiveSmallIntegerField(default=0)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The frozen prompts this round's policy is judged on; its hash is also kept in `metrics`.
    evaluation_set = models.ForeignKey(
        EvaluationSet, null=True, blank=True, on_delete=models.PROTECT, related_name="training_rounds"
    )
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-number"]
        permissions = [("start_round", "Can start, cancel and retry training rounds")]

    def __str__(self) -> str:
        return f"Round {self.number} ({self.status})"


class ModelVersion(models.Model):
    class Kind(models.TextChoices):
        POLICY = "policy", "Policy"
        REWARD = "reward", "Reward model"
        SFT = "sft", "SFT policy"

    name = models.CharField(max_length=120, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    training_round = models.ForeignKey(
        TrainingRound, null=True, blank=True, on_delete=models.PROTECT, related_name="model_versions"
    )
    path = models.CharField(max_length=500)  # Checkpoint directory on disk.
    base_model_id = models.CharField(max_length=200)
    config = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    is_serving = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            # One serving version per kind: the policy that writes candidates, the reward model
            # that judges them.
            models.UniqueConstraint(fields=["kind"], condition=Q(is_serving=True), name="one_serving_version_per_kind"),
            # A retried or duplicated training task can never register a second model of a kind.
            models.UniqueConstraint(
                fields=["training_round", "kind"], condition=Q(training_round__isnull=False), name="one_version_per_round_and_kind"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Candidate(models.Model):
    """One generated (or annotator-edited) reply at position `context_length` of a conversation."""

    conversation = models.ForeignKey(Conversation, on_delete=models.PROTECT, related_name="candidates")
    context_length = models.PositiveIntegerField()  # Number of turns before this reply.
    text = models.TextField()
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="candidates"
    )
    # Set when an annotator rewrote another candidate into this one (Bai et al. 2022, App. D.2).
    edited_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="edits")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    sampling = models.JSONField(default=dict, blank=True)
    token_count = models.PositiveIntegerField(default=0)
    finished_with_eos = models.BooleanField(default=True)
    generation_seconds = models.FloatField(default=0.0)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["conversation", "context_length"])]

    def __str__(self) -> str:
        return self.text[:80]


class Comparison(models.Model):
    class Source(models.TextChoices):
        GENERATED = "generated", "Generated pair"
        LIVE_CHAT = "live_chat", "Live chat"
        EDIT = "edit", "Annotator edit vs original"
        IMPORTED = "imported", "Imported"
        # A blind head-to-head of a round's new policy against the serving one on an evaluation
        # prompt. Annotators see it like any generated pair; its judgments decide promotion and
        # never train anything.
        VERDICT = "verdict", "Blind head-to-head for a promotion verdict"

    conversation = models.ForeignKey(Conversation, on_delete=models.PROTECT, related_name="comparisons")
    context_length = models.PositiveIntegerField()
    candidate_a = models.ForeignKey(Candidate, on_delete=models.PROTECT, related_name="+")
    candidate_b = models.ForeignKey(Candidate, on_delete=models.PROTECT, related_name="+")
    training_round = models.ForeignKey(
        TrainingRound, null=True, blank=True, on_delete=models.PROTECT, related_name="comparisons"
    )
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.GENERATED)
    overlap_target = models.PositiveSmallIntegerField(default=1)  # Judgments wanted from distinct annotators.
    # Kept by judgment_submit in the judgment's own transaction, so the annotation queue can skip
    # finished comparisons through an index instead of counting judgments of every comparison.
    judgment_count = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(
                fields=["training_round", "id"],
                condition=Q(judgment_count__lt=models.F("overlap_target")),
                name="comparison_still_open",
            )
        ]
        constraints = [
            models.CheckConstraint(condition=~Q(candidate_a=models.F("candidate_b")), name="comparison_distinct_candidates"),
            models.UniqueConstraint(fields=["candidate_a", "candidate_b"], name="comparison_unique_pair"),
        ]

    def __str__(self) -> str:
        return f"Comparison {self.pk}"


class Judgment(models.Model):
    # Choices name the comparison's stored candidates, not the sides of the page: which candidate
    # was shown on the left (left_candidate) differs from one annotator to the next.
    class Choice(models.TextChoices):
        A = "a", "First candidate (A) is better"
        B = "b", "Second candidate (B) is better"
        TIE = "tie", "About the same"
        BOTH_BAD = "both_bad", "Both are bad"

    class Side(models.TextChoices):
        A = "a", "First candidate (A)"
        B = "b", "Second candidate (B)"

    comparison = models.ForeignKey(Comparison, on_delete=models.PROTECT, related_name="judgments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="judgments")
    choice = models.CharField(max_length=16, choices=Choice.choices)
    # 1 (slightly better) to 4 (much better); null for ties and both-bad.
    strength = models.PositiveSmallIntegerField(null=True, blank=True)
    left_candidate = models.CharField("shown on the left", max_length=1, choices=Side.choices)
    rationale = models.TextField(blank=True)
    flags = models.JSONField(default=list, blank=True)  # e.g. ["unsafe"].
    seconds_spent = models.FloatField(default=0.0)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["comparison", "annotator"], name="one_judgment_per_annotator"),
            models.CheckConstraint(
                condition=(Q(choice__in=["a", "b"], strength__isnull=False) & Q(strength__gte=1, strength__lte=4))
                | (Q(choice__in=["tie", "both_bad"]) & Q(strength__isnull=True)),
                name="judgment_strength_matches_choice",
            ),
        ]
        permissions = [("export_preferences", "Can export preference datasets")]

    def __str__(self) -> str:
        return f"{self.annotator} on {self.comparison_id}: {self.choice}"


class Demonstration(models.Model):
    """An annotator-written ideal reply, used for supervised fine-tuning (seed step 0)."""

    conversation = models.ForeignKey(Conversation, on_delete=models.PROTECT, related_name="demonstrations")
    context_length = models.PositiveIntegerField()
    text = models.TextField()
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="demonstrations")
    candidate = models.OneToOneField(
        Candidate, null=True, blank=True, on_delete=models.PROTECT, related_name="demonstration"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]


class GenerationBatch(models.Model):
    """A request to write K candidates for some conversations with one model version.

    The Celery task claims it with a conditional update (pending -> running), so a duplicated or
    retried task message never generates the batch twice.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="generation_batches")
    conversations = models.ManyToManyField(Conversation, related_name="generation_batches")
    training_round = models.ForeignKey(
        TrainingRound, null=True, blank=True, on_delete=models.PROTECT, related_name="generation_batches"
    )
    sampling = models.JSONField(default=dict, blank=True)
    overlap_target = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    candidates_created = models.PositiveIntegerField(default=0)
    comparisons_created = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)
    # Refreshed by the running worker's heartbeat; see core.claims for when a claim counts as dead.
    claimed = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=200, blank=True)
    # When the batch's task was last sent; the sweeper sends it again if it is never claimed.
    enqueued = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    finished = models.DateTimeField(null=True, blank=True)
    # While it runs: the share of its tokens written, and (for live chat, which shows replies as
    # they grow) each reply's text so far, in the order the candidates will be stored.
    progress = models.FloatField(default=0.0)
    partial_replies = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "generation batches"

    def __str__(self) -> str:
        return f"Generation batch {self.pk} ({self.status})"


class LoginAttempts(models.Model):
    """Sign-in attempts for one client address and user name, the login limiter's counter.

    A row in the database rather than a cache entry: the limiter locks it (SELECT ... FOR UPDATE)
    to count an attempt before the password is checked, which holds across every web process and
    thread, where a cache read-then-increment let parallel guesses through.
    """

    key = models.CharField(max_length=64, unique=True)  # sha256 of the address and the normalised user name
    attempts = models.PositiveIntegerField(default=0)
    last_attempt = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.attempts} sign-in attempts ({self.key[:8]})"
