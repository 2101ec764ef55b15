package convexcdc.spark;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.analysis.NoSuchTableException;
import org.apache.spark.sql.catalyst.analysis.TableAlreadyExistsException;
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow;
import org.apache.spark.sql.connector.catalog.Column;
import org.apache.spark.sql.connector.catalog.Identifier;
import org.apache.spark.sql.connector.catalog.SupportsRead;
import org.apache.spark.sql.connector.catalog.SupportsRowLevelOperations;
import org.apache.spark.sql.connector.catalog.SupportsWrite;
import org.apache.spark.sql.connector.catalog.TableCapability;
import org.apache.spark.sql.connector.catalog.TableCatalog;
import org.apache.spark.sql.connector.catalog.TableChange;
import org.apache.spark.sql.connector.catalog.TableInfo;
import org.apache.spark.sql.connector.read.Batch;
import org.apache.spark.sql.connector.read.InputPartition;
import org.apache.spark.sql.connector.read.PartitionReader;
import org.apache.spark.sql.connector.read.PartitionReaderFactory;
import org.apache.spark.sql.connector.read.Scan;
import org.apache.spark.sql.connector.read.ScanBuilder;
import org.apache.spark.sql.connector.write.BatchWrite;
import org.apache.spark.sql.connector.write.DataWriter;
import org.apache.spark.sql.connector.write.DataWriterFactory;
import org.apache.spark.sql.connector.write.LogicalWriteInfo;
import org.apache.spark.sql.connector.write.PhysicalWriteInfo;
import org.apache.spark.sql.connector.write.RowLevelOperation;
import org.apache.spark.sql.connector.write.RowLevelOperationBuilder;
import org.apache.spark.sql.connector.write.RowLevelOperationInfo;
import org.apache.spark.sql.connector.write.SupportsTruncate;
import org.apache.spark.sql.connector.write.Write;
import org.apache.spark.sql.connector.write.WriteBuilder;
import org.apache.spark.sql.connector.write.WriterCommitMessage;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.sql.util.CaseInsensitiveStringMap;

/**
 * A test-only, in-memory Spark catalog whose tables support row-level operations (MERGE,
 * UPDATE, DELETE) by copy-on-write of the whole table.
 *
 * <p>Why it exists: Apache Spark's AUTO CDC flows (Spark Declarative Pipelines) MERGE each
 * micro-batch into their target, so the target must implement DSv2
 * {@link SupportsRowLevelOperations}. On Databricks that target is a Unity Catalog managed
 * Delta table; on Apache Spark from PyPI neither parquet tables nor open-source Delta
 * implement the interface. This catalog doubles only that storage. Everything under test
 * (the pipeline graph, AUTO CDC's ordering, tombstones and SCD bookkeeping, the MERGE
 * rewrite) is Spark's own code.
 *
 * <p>What it keeps: per table a schema, properties and an immutable list of rows, replaced
 * atomically on every commit. Tables live in a static map, so every Spark Connect session of
 * the server (the pipeline's and the test's reader) sees the same tables. Nothing is
 * persisted: the tables live as long as the server.
 *
 * <p>Enable with {@code spark.sql.catalog.<name>=convexcdc.spark.RowLevelCatalog}.
 */
public final class RowLevelCatalog implements TableCatalog {
  private static final Map<String, MemoryTable> TABLES = new ConcurrentHashMap<>();

  private String catalogName;

  @Override
  public void initialize(String name, CaseInsensitiveStringMap options) {
    this.catalogName = name;
  }

  @Override
  public String name() {
    return catalogName;
  }

  /** Spark identifiers are case-insensitive; so are this catalog's keys. */
  private String key(Identifier ident) {
    List<String> parts = new ArrayList<>(Arrays.asList(ident.namespace()));
    parts.add(ident.name());
    return catalogName + "." + String.join(".", parts).toLowerCase(Locale.ROOT);
  }

  @Override
  public Identifier[] listTables(String[] namespace) {
    String prefix = catalogName + "." + String.join(".", namespace).toLowerCase(Locale.ROOT) + ".";
    return TABLES.entrySet().stream()
        .filter(e -> e.getKey().startsWith(prefix)
            && !e.getKey().substring(prefix.length()).contains("."))
        .map(e -> Identifier.of(namespace, e.getValue().tableName))
        .toArray(Identifier[]::new);
  }

  @Override
  public MemoryTable loadTable(Identifier ident) throws NoSuchTableException {
    MemoryTable table = TABLES.get(key(ident));
    if (table == null) {
      throw new NoSuchTableException(ident);
    }
    return table;
  }

  @Override
  public MemoryTable createTable(Identifier ident, TableInfo info)
      throws TableAlreadyExistsException {
    if (info.partitions().length > 0) {
      throw new UnsupportedOperationException("RowLevelCatalog tables are not partitioned");
    }
    StructType schema = new StructType();
    for (Column column : info.columns()) {
      schema = schema.add(column.name(), column.dataType(), column.nullable());
    }
    MemoryTable table = new MemoryTable(ident.name(), key(ident), schema, info.properties());
    if (TABLES.putIfAbsent(key(ident), table) != null) {
      throw new TableAlreadyExistsException(ident);
    }
    return table;
  }

  @Override
  public MemoryTable alterTable(Identifier ident, TableChange... changes)
      throws NoSuchTableException {
    MemoryTable table = loadTable(ident);
    table.alter(changes);
    return table;
  }

  @Override
  public boolean dropTable(Identifier ident) {
    return TABLES.remove(key(ident)) != null;
  }

  @Override
  public void renameTable(Identifier from, Identifier to) {
    throw new UnsupportedOperationException("RowLevelCatalog cannot rename tables");
  }

  /** The committed rows of a table and the commit that produced them. */
  private record Snapshot(long version, StructType schema, InternalRow[] rows) {}

  /** One table: schema, properties and rows, each commit replacing the row list at once. */
  public static final class MemoryTable
      implements SupportsRead, SupportsWrite, SupportsRowLevelOperations {
    private final String tableName;
    private final String fullName;
    private final Map<String, String> properties;
    private Snapshot current;

    MemoryTable(String tableName, String fullName, StructType schema, Map<String, String> props) {
      this.tableName = tableName;
      this.fullName = fullName;
      this.properties = new ConcurrentHashMap<>(props);
      this.current = new Snapshot(0, schema, new InternalRow[0]);
    }

    synchronized Snapshot snapshot() {
      return current;
    }

    /**
     * Commit written rows: appended, or replacing the table. A copy-on-write commit passes
     * the version its scan read and fails if another commit came in between, as a
     * transactional table format would.
     */
    synchronized void commit(List<InternalRow> written, boolean replace, long readVersion) {
      if (readVersion >= 0 && readVersion != current.version) {
        throw new IllegalStateException(
            fullName + " changed after this operation read it (version " + readVersion
                + ", now " + current.version + ")");
      }
      List<InternalRow> rows = new ArrayList<>();
      if (!replace) {
        rows.addAll(Arrays.asList(current.rows));
      }
      rows.addAll(written);
      current = new Snapshot(current.version + 1, current.schema, rows.toArray(new InternalRow[0]));
    }

    /** Column additions (new fields), nullability and property changes; nothing else. */
    synchronized void alter(TableChange... changes) {
      StructType schema = current.schema;
      for (TableChange change : changes) {
        if (change instanceof TableChange.SetProperty set) {
          properties.put(set.property(), set.value());
        } else if (change instanceof TableChange.RemoveProperty remove) {
          properties.remove(remove.property());
        } else if (change instanceof TableChange.AddColumn add && add.fieldNames().length == 1) {
          schema = schema.add(add.fieldNames()[0], add.dataType(), add.isNullable());
        } else if (change instanceof TableChange.UpdateColumnNullability nullability
            && nullability.fieldNames().length == 1) {
          StructField[] fields = schema.fields().clone();
          int index = schema.fieldIndex(nullability.fieldNames()[0]);
          StructField old = fields[index];
          fields[index] =
              new StructField(old.name(), old.dataType(), nullability.nullable(), old.metadata());
          schema = new StructType(fields);
        } else {
          throw new UnsupportedOperationException(
              "RowLevelCatalog cannot apply " + change + " to " + fullName);
        }
      }
      current = new Snapshot(current.version + 1, schema, widen(current, schema));
    }

    /** Rows of {@code from} padded with nulls for columns added since. */
    private static InternalRow[] widen(Snapshot from, StructType to) {
      StructField[] old = from.schema.fields();
      if (old.length == to.fields().length) {
        return from.rows;
      }
      InternalRow[] rows = new InternalRow[from.rows.length];
      for (int r = 0; r < rows.length; r++) {
        Object[] values = new Object[to.fields().length];
        for (int i = 0; i < old.length; i++) {
          values[i] = from.rows[r].isNullAt(i) ? null : from.rows[r].get(i, old[i].dataType());
        }
        rows[r] = new GenericInternalRow(values);
      }
      return rows;
    }

    @Override
    public String name() {
      return fullName;
    }

    @Override
    public Column[] columns() {
      return Arrays.stream(snapshot().schema.fields())
          .map(f -> Column.create(f.name(), f.dataType(), f.nullable()))
          .toArray(Column[]::new);
    }

    @Override
    public Map<String, String> properties() {
      return new HashMap<>(properties);
    }

    @Override
    public Set<TableCapability> capabilities() {
      return EnumSet.of(
          TableCapability.BATCH_READ, TableCapability.BATCH_WRITE, TableCapability.TRUNCATE);
    }

    @Override
    public ScanBuilder newScanBuilder(CaseInsensitiveStringMap options) {
      Snapshot snapshot = snapshot();
      return () -> new WholeTableScan(snapshot);
    }

    @Override
    public WriteBuilder newWriteBuilder(LogicalWriteInfo info) {
      return new AppendOrTruncate(this);
    }

    @Override
    public RowLevelOperationBuilder newRowLevelOperationBuilder(RowLevelOperationInfo info) {
      return () -> new CopyOnWrite(this, info.command());
    }
  }

  /**
   * MERGE, UPDATE or DELETE as copy-on-write of the whole table: Spark reads every row
   * through {@link #newScanBuilder}, and writes back every row that remains, which then
   * replace the table in one commit.
   */
  private static final class CopyOnWrite implements RowLevelOperation {
    private final MemoryTable table;
    private final Command command;
    private volatile long readVersion = -1;

    CopyOnWrite(MemoryTable table, Command command) {
      this.table = table;
      this.command = command;
    }

    @Override
    public Command command() {
      return command;
    }

    @Override
    public ScanBuilder newScanBuilder(CaseInsensitiveStringMap options) {
      return () -> {
        Snapshot snapshot = table.snapshot();
        readVersion = snapshot.version;
        return new WholeTableScan(snapshot);
      };
    }

    @Override
    public WriteBuilder newWriteBuilder(LogicalWriteInfo info) {
      return new WriteBuilder() {
        @Override
        public Write build() {
          return new CollectingWrite(table, true, () -> readVersion);
        }
      };
    }
  }

  /** Plain writes: appends, or (after {@code truncate()}) a replacement of all rows. */
  private static final class AppendOrTruncate implements SupportsTruncate {
    private final MemoryTable table;
    private boolean truncate;

    AppendOrTruncate(MemoryTable table) {
      this.table = table;
    }

    @Override
    public WriteBuilder truncate() {
      truncate = true;
      return this;
    }

    @Override
    public Write build() {
      return new CollectingWrite(table, truncate, () -> -1L);
    }
  }

  /** The version a commit must find, or -1 for none. */
  private interface ExpectedVersion {
    long get();
  }

  /** Tasks collect their rows; the driver commits them all at once. */
  private static final class CollectingWrite implements Write, BatchWrite {
    private final MemoryTable table;
    private final boolean replace;
    private final ExpectedVersion expected;

    CollectingWrite(MemoryTable table, boolean replace, ExpectedVersion expected) {
      this.table = table;
      this.replace = replace;
      this.expected = expected;
    }

    @Override
    public BatchWrite toBatch() {
      return this;
    }

    @Override
    public DataWriterFactory createBatchWriterFactory(PhysicalWriteInfo info) {
      return (DataWriterFactory) (partitionId, taskId) -> new RowCollector();
    }

    @Override
    public void commit(WriterCommitMessage[] messages) {
      List<InternalRow> rows = new ArrayList<>();
      for (WriterCommitMessage message : messages) {
        rows.addAll(((CollectedRows) message).rows());
      }
      table.commit(rows, replace, expected.get());
    }

    @Override
    public void abort(WriterCommitMessage[] messages) {}
  }

  private record CollectedRows(List<InternalRow> rows) implements WriterCommitMessage {}

  private static final class RowCollector implements DataWriter<InternalRow> {
    private final List<InternalRow> rows = new ArrayList<>();

    @Override
    public void write(InternalRow row) {
      rows.add(row.copy());
    }

    @Override
    public WriterCommitMessage commit() {
      return new CollectedRows(rows);
    }

    @Override
    public void abort() {}

    @Override
    public void close() {}
  }

  /** All rows of one snapshot, in one partition. */
  private record WholeTableScan(Snapshot snapshot) implements Scan, Batch {
    @Override
    public StructType readSchema() {
      return snapshot.schema;
    }

    @Override
    public Batch toBatch() {
      return this;
    }

    @Override
    public InputPartition[] planInputPartitions() {
      return new InputPartition[] {new Rows(snapshot.rows)};
    }

    @Override
    public PartitionReaderFactory createReaderFactory() {
      return (PartitionReaderFactory) partition -> new RowReader(((Rows) partition).rows());
    }
  }

  private record Rows(InternalRow[] rows) implements InputPartition {}

  private static final class RowReader implements PartitionReader<InternalRow> {
    private final InternalRow[] rows;
    private int next = -1;

    RowReader(InternalRow[] rows) {
      this.rows = rows;
    }

    @Override
    public boolean next() {
      next++;
      return next < rows.length;
    }

    @Override
    public InternalRow get() {
      return rows[next];
    }

    @Override
    public void close() {}
  }
}
