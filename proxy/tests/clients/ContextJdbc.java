// pgjdbc through the proxy, supplying its own context as an app would: before each request,
// set_config('sqlcommenter.traceparent', '<traceparent>', false) (a literal, through a Statement). Each
// request runs a PreparedStatement query and an executeBatch of 3 inserts (named Binds in one Sync), both
// server-prepared from the first execution (prepareThreshold 1). MODE `unnamed-set`: the driver's default
// threshold elsewhere, so the set_config texts (each different) go as unnamed statements; `named-set`:
// prepareThreshold=1 for the whole connection, so the set_config goes as a named statement too.
// Executions are marked ctx_LIB_q, context changes ctx_LIB_set.
// Usage: java -cp /usr/share/java/postgresql.jar ContextJdbc.java PORT APPNAME REQUESTS MODE LIB ; prints the count.
import java.security.SecureRandom;
import java.sql.*;

public class ContextJdbc {
    static final SecureRandom RNG = new SecureRandom();

    static String hex(int bytes) {
        byte[] b = new byte[bytes];
        RNG.nextBytes(b);
        StringBuilder s = new StringBuilder();
        for (byte x : b) s.append(String.format("%02x", x));
        return s.toString();
    }

    public static void main(String[] a) throws Exception {
        String mode = a[3], lib = a[4];
        String url = "jdbc:postgresql://127.0.0.1:" + a[0] + "/postgres?user=postgres&ApplicationName=" + a[1]
            + (mode.equals("named-set") ? "&prepareThreshold=1" : "");
        int n = Integer.parseInt(a[2]);
        int count = 0;
        try (Connection c = DriverManager.getConnection(url); Statement st = c.createStatement()) {
            st.execute("CREATE TEMP TABLE ctx_jdbc_t(x int)");
            try (PreparedStatement q = c.prepareStatement("SELECT ?::int * 7 /*ctx_" + lib + "_q query*/");
                 PreparedStatement ins = c.prepareStatement("INSERT INTO ctx_jdbc_t VALUES (?) /*ctx_" + lib + "_q batch*/")) {
                q.unwrap(org.postgresql.PGStatement.class).setPrepareThreshold(1);
                ins.unwrap(org.postgresql.PGStatement.class).setPrepareThreshold(1);
                for (int r = 0; r < n; r++) {
                    String tp = "00-" + hex(16) + "-" + hex(8) + "-01";
                    st.execute("SELECT set_config('sqlcommenter.traceparent', '" + tp + "', false) /*ctx_" + lib + "_set*/");
                    q.setInt(1, r);
                    try (ResultSet rs = q.executeQuery()) {
                        rs.next();
                        if (rs.getInt(1) != r * 7) throw new IllegalStateException("wrong result");
                    }
                    for (int k = 0; k < 3; k++) {
                        ins.setInt(1, r * 3 + k);
                        ins.addBatch();
                    }
                    int[] done = ins.executeBatch();
                    if (done.length != 3) throw new IllegalStateException("batch");
                    count += 4;
                }
            }
        }
        System.out.println(count);
    }
}
